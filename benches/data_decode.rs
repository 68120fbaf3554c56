//! Decoding a ~1 MB `getmeas` page into typed rows (`data::decode_page`: the envelope's
//! status, `more`/`offset`, every group and measure with its exact value, identities
//! collapsed) beside parsing the same bytes into a `serde_json::Value` tree, in one run.
//! Goal: typed ≤ 1.0× the untyped parse. The ratio of the medians is printed at the end.
//!
//! `cargo bench --bench data_decode -- --warm-up-time 1`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_withings::data::{GetMeas, decode_page};

/// A real-shaped page: groups as a Body Scan sends them (weight, fat, muscle, water, bone,
/// one in four with segmental measures by position), device fields, `more`/`offset`.
fn page(target_bytes: usize) -> Vec<u8> {
    let mut groups = Vec::new();
    let mut size = 0;
    let mut i: i64 = 0;
    while size < target_bytes {
        let mut measures = vec![
            format!(
                r#"{{"value":{},"type":1,"unit":-3,"algo":218235904,"fm":3}}"#,
                70_000 + i % 9000
            ),
            format!(r#"{{"value":{},"type":6,"unit":-3}}"#, 19_000 + i % 700),
            format!(
                r#"{{"value":{},"type":76,"unit":-2,"algo":218235904,"fm":3,"position":7}}"#,
                5_000 + i % 300
            ),
            format!(
                r#"{{"value":{},"type":77,"unit":-2,"algo":218235904,"fm":3,"position":7}}"#,
                3_800 + i % 200
            ),
            format!(
                r#"{{"value":{},"type":88,"unit":-2,"algo":218235904,"fm":3,"position":7}}"#,
                300 + i % 90
            ),
        ];
        if i % 4 == 0 {
            for position in [2, 3, 10, 11, 12] {
                measures.push(format!(
                    r#"{{"value":{},"type":173,"unit":-2,"algo":218235904,"fm":3,"position":{position}}}"#,
                    400 + (i + position) % 3000
                ));
            }
        }
        let g = format!(
            r#"{{"grpid":{},"attrib":0,"date":{},"created":{},"modified":{},"category":1,"deviceid":"51e8d0e7d16da9ff673accf10958ca94fea55d6e","hash_deviceid":"51e8d0e7d16da9ff673accf10958ca94fea55d6e","measures":[{}],"modelid":10,"model":"Body Scan","comment":null}}"#,
            5_149_666_502 + i,
            1_600_000_000 + i * 86_000,
            1_600_084_600 + i * 86_000,
            1_600_084_600 + i * 86_000,
            measures.join(",")
        );
        size += g.len() + 1;
        groups.push(g);
        i += 1;
    }
    format!(
        r#"{{"status":0,"body":{{"updatetime":1704938811,"timezone":"Europe\/Amsterdam","measuregrps":[{}],"more":1,"offset":"3f9a"}}}}"#,
        groups.join(",")
    )
    .into_bytes()
}

fn typed(bytes: &[u8]) -> usize {
    let page = decode_page::<GetMeas>(bytes).expect("a valid page");
    page.rows.len()
}

fn untyped(bytes: &[u8]) -> usize {
    let value: serde_json::Value = serde_json::from_slice(bytes).expect("valid JSON");
    value["body"]["measuregrps"].as_array().map_or(0, Vec::len)
}

fn bench(c: &mut Criterion) {
    let bytes = page(1024 * 1024);
    let groups = typed(&bytes);
    assert_eq!(groups, untyped(&bytes));
    println!("page: {} bytes, {groups} groups", bytes.len());
    let mut g = c.benchmark_group("data_decode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("typed_rows", |b| {
        b.iter(|| typed(std::hint::black_box(&bytes)))
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| untyped(std::hint::black_box(&bytes)))
    });
    g.finish();

    // The ratio, timed interleaved round by round (the machine is shared).
    let mut ratios = Vec::new();
    for _ in 0..31 {
        let t = Instant::now();
        std::hint::black_box(typed(&bytes));
        let typed_time = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(untyped(&bytes));
        let untyped_time = t.elapsed().max(Duration::from_nanos(1));
        ratios.push(typed_time.as_secs_f64() / untyped_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "typed / serde_json::Value, median of 31 interleaved rounds: {:.2}x",
        ratios[ratios.len() / 2]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
