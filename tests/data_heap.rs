//! One page in memory at a time: streaming a 10,000-group `getmeas` history in pages of 1,000
//! through `auth.layer()` peaks at no more than two pages of heap (one page alone: its bytes
//! decoded into rows, measured in the same run). Its own binary, so the counting allocator
//! sees only this test; `benches/data_heap.rs` is the 100,000-group version.

#[path = "../benches/common/heap.rs"]
mod heap;

#[test]
fn streaming_ten_thousand_groups_holds_at_most_two_pages() {
    let figures = heap::measure(10_000, 1_000).unwrap();
    println!("{}", figures.report());
    assert_eq!(figures.calls, 10);
    assert!(
        figures.pages() <= 2.0,
        "{} bytes at peak, one page is {} bytes",
        figures.streaming_peak,
        figures.page_heap
    );
}
