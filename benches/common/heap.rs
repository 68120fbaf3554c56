//! The heap while streaming a long `getmeas` history, shared by `benches/data_heap.rs` and
//! `tests/data_heap.rs` (each its own binary, so the counting allocator here sees only it).
//!
//! A fake Withings makes each page when it is asked for (the server side holds one page at a
//! time), behind the real `auth.layer()`; `DataClient::rows` follows `more`/`offset` and the
//! rows are consumed one by one and dropped. The peak heap while streaming is compared, in the
//! same run, with one page alone: its byte length, and the heap of holding its bytes and
//! decoding them into rows with `decode_page` (one page in memory).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use tower::ServiceBuilder;
use tower_withings::data::{DataClient, GetMeas, MeasureType, decode_page};
use tower_withings::{Endpoints, UserId};

/// `System`, counting the bytes currently allocated and the peak since the last reset.
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through here).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and the caller's contract for `realloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Starts a measurement: the peak is set to what is allocated now, which is returned.
fn start() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The peak since `start`, above what was allocated then.
fn peak_since(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

#[path = "../../tests/support/fake_handle.rs"]
mod fake_handle;
use fake_handle::fake_handle;

const USER: UserId = UserId(46865875);

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Groups in the history, all read.
    pub groups: usize,
    /// Groups per page.
    pub per_page: usize,
    /// Data calls the stream made (one per page).
    pub calls: usize,
    /// The largest page served, in bytes.
    pub page_bytes: usize,
    /// Peak heap of one page alone: its bytes held and decoded into rows by `decode_page`.
    pub page_heap: usize,
    /// Peak heap above the start while streaming every page, rows consumed one by one.
    pub streaming_peak: usize,
}

impl Figures {
    /// The streaming peak in pages (one page alone, bytes and rows: `page_heap`).
    pub fn pages(&self) -> f64 {
        self.streaming_peak as f64 / self.page_heap as f64
    }

    /// The streaming peak in page byte lengths.
    pub fn byte_pages(&self) -> f64 {
        self.streaming_peak as f64 / self.page_bytes as f64
    }

    /// The lines printed by the bench and the test.
    pub fn report(&self) -> String {
        format!(
            "{} groups in {} pages of {}: largest page {} bytes; one page alone (bytes + decoded rows): {} bytes heap\n\
             peak heap while streaming {} groups: {} bytes = {:.2} pages (goal <= 2)\n\
             (= {:.2} page byte lengths)",
            self.groups,
            self.calls,
            self.per_page,
            self.page_bytes,
            self.page_heap,
            self.groups,
            self.streaming_peak,
            self.pages(),
            self.byte_pages(),
        )
    }
}

/// The opaque offset for page `page` (not a row count), and back.
fn offset(page: usize) -> String {
    format!("{:08}", page * 7919 + 13)
}

fn page_of(offset: &str) -> Option<usize> {
    let n: usize = offset.parse().ok()?;
    (n >= 13 && (n - 13) % 7919 == 0).then(|| (n - 13) / 7919)
}

const FIRST_GRPID: i64 = 5_149_666_502;

/// Measures in group `i` (one in four has five segmental ones besides its five).
fn measures_in(i: i64) -> usize {
    if i % 4 == 0 { 10 } else { 5 }
}

/// The weight of group `i`, in grams (`unit` -3).
fn weight(i: i64) -> i64 {
    70_000 + i % 9000
}

/// Page `page` of a `groups`-group history, `per_page` groups each: Body Scan-shaped groups
/// (weight, fat, muscle, water, bone; one in four with segmental measures by position),
/// fixed-width numbers so every full page has the same length.
fn page_json(page: usize, per_page: usize, groups: usize) -> String {
    let start = page * per_page;
    let end = ((page + 1) * per_page).min(groups);
    let mut out = String::with_capacity((end - start) * 700 + 200);
    out.push_str(
        r#"{"status":0,"body":{"updatetime":1704938811,"timezone":"Europe\/Amsterdam","measuregrps":["#,
    );
    for i in start..end {
        let i = i as i64;
        if i as usize > start {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"grpid":{},"attrib":0,"date":{},"created":{},"modified":{},"category":1,"deviceid":"51e8d0e7d16da9ff673accf10958ca94fea55d6e","hash_deviceid":"51e8d0e7d16da9ff673accf10958ca94fea55d6e","measures":[{{"value":{},"type":1,"unit":-3,"algo":218235904,"fm":3}},{{"value":{},"type":6,"unit":-3}},{{"value":{},"type":76,"unit":-2,"algo":218235904,"fm":3,"position":7}},{{"value":{},"type":77,"unit":-2,"algo":218235904,"fm":3,"position":7}},{{"value":{},"type":88,"unit":-2,"algo":218235904,"fm":3,"position":7}}"#,
            FIRST_GRPID + i,
            1_600_000_000 + i * 3600,
            1_600_084_600 + i * 3600,
            1_600_084_600 + i * 3600,
            weight(i),
            19_000 + i % 700,
            5_000 + i % 300,
            3_800 + i % 200,
            300 + i % 90,
        ));
        if measures_in(i) == 10 {
            for position in [2, 3, 10, 11, 12] {
                out.push_str(&format!(
                    r#",{{"value":{},"type":173,"unit":-2,"algo":218235904,"fm":3,"position":{position}}}"#,
                    1_000 + (i + position) % 3000
                ));
            }
        }
        out.push_str(r#"],"modelid":10,"model":"Body Scan","comment":null}"#);
    }
    if end < groups {
        out.push_str(&format!(
            r#"],"more":1,"offset":"{}"}}}}"#,
            offset(page + 1)
        ));
    } else {
        out.push_str(r#"],"more":0,"offset":0}}"#);
    }
    // The page's heap is its length, so the two units below agree on what the bytes cost.
    out.shrink_to_fit();
    out
}

/// A refusal body: anything but a data call for a page we made ends the stream with an error.
const REFUSED: &str = r#"{"status":2555,"body":{},"error":"not a page of this history"}"#;

/// What the fake served: calls, and the largest page in bytes.
#[derive(Default)]
struct Served {
    calls: AtomicUsize,
    largest: AtomicUsize,
}

/// The fake Withings: each call's page made on demand from its `offset`.
fn service(
    per_page: usize,
    groups: usize,
    served: Arc<Served>,
) -> impl tower_withings::transport::HttpClient<ResponseBody = Full<Bytes>> {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let served = served.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("a full body").to_bytes();
            let mut action = None;
            let mut page = Some(0);
            for (k, v) in form_urlencoded::parse(&body) {
                match &*k {
                    "action" => action = Some(v.into_owned()),
                    "offset" => page = page_of(&v),
                    _ => {}
                }
            }
            let text = match (parts.uri.path(), action.as_deref(), page) {
                ("/measure", Some("getmeas"), Some(page)) if page * per_page < groups => {
                    page_json(page, per_page, groups)
                }
                _ => REFUSED.to_owned(),
            };
            served.calls.fetch_add(1, Ordering::Relaxed);
            served.largest.fetch_max(text.len(), Ordering::Relaxed);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    })
}

/// Streams a `groups`-group history in pages of `per_page` through `auth.layer()`, checking
/// every row (grpid in order, weight exact, measure count), and measures the heap.
pub fn measure(groups: usize, per_page: usize) -> Result<Figures, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(groups, per_page))
}

async fn run(groups: usize, per_page: usize) -> Result<Figures, String> {
    // Warm-up: the first decode loads the page's zone from the tz database, once per process.
    drop(std::hint::black_box(decode_page::<GetMeas>(
        page_json(0, per_page.min(4), groups).as_bytes(),
    )));

    // One page alone: its bytes, then its rows, both held.
    let base = start();
    let bytes = page_json(0, per_page, groups);
    let page = decode_page::<GetMeas>(bytes.as_bytes()).map_err(|e| e.to_string())?;
    let decoded = page.rows.iter().filter(|r| r.is_ok()).count();
    let page_heap = peak_since(base);
    drop(page);
    drop(bytes);
    if decoded != per_page.min(groups) {
        return Err(format!("one page alone: {decoded} rows, not {per_page}"));
    }

    // The app's stack: the layer in front of the fake; a valid token, no budget to wait on.
    let served = Arc::new(Served::default());
    let fake = service(per_page, groups, served.clone());
    let auth = fake_handle(fake.clone(), Endpoints::withings(), USER, "user.metrics")
        .await
        .map_err(|e| e.to_string())?;
    let stack = ServiceBuilder::new().layer(auth.layer()).service(fake);
    let data = DataClient::new(stack, &Endpoints::withings());
    let query = GetMeas::since(Timestamp::UNIX_EPOCH).types(&[
        MeasureType::Weight,
        MeasureType::FatRatio,
        MeasureType::MuscleMass,
        MeasureType::Hydration,
        MeasureType::BoneMass,
        MeasureType::SegmentalMuscleMass,
    ]);

    // Every page, each row checked and dropped: nothing kept that grows with the history.
    let base = start();
    let mut rows = data.rows(USER, query);
    let mut read: i64 = 0;
    while let Some(row) = rows.next().await {
        let group = row.map_err(|e| format!("after {read} groups: {e}"))?;
        let i = read;
        let ok = group.grpid == FIRST_GRPID + i
            && group.measures.len() == measures_in(i)
            && group
                .get(MeasureType::Weight)
                .is_some_and(|w| (w.value.value, w.value.unit) == (weight(i), -3));
        if !ok {
            return Err(format!("group {i} is not as sent: grpid {}", group.grpid));
        }
        read += 1;
    }
    drop(rows);
    let streaming_peak = peak_since(base);
    if read as usize != groups {
        return Err(format!("{read} groups read, not {groups}"));
    }
    let calls = served.calls.load(Ordering::Relaxed);
    if calls != groups.div_ceil(per_page) {
        return Err(format!(
            "{calls} calls for {groups} groups in pages of {per_page}"
        ));
    }
    Ok(Figures {
        groups,
        per_page,
        calls: served.calls.load(Ordering::Relaxed),
        page_bytes: served.largest.load(Ordering::Relaxed),
        page_heap,
        streaming_peak,
    })
}
