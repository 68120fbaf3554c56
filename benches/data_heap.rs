//! The heap while streaming a 100,000-group `getmeas` history through `auth.layer()` in pages
//! of 1,000 (`DataClient::rows`, rows consumed one by one), against one page alone measured in
//! the same run: its byte length, and the heap of its bytes decoded into rows. Goal: the
//! streaming peak is at most two pages. Counts bytes with a counting global allocator; exits
//! non-zero when the goal is missed.
//!
//! `cargo bench --bench data_heap`

#[path = "common/heap.rs"]
mod heap;

const GROUPS: usize = 100_000;
const PER_PAGE: usize = 1_000;

fn main() {
    match heap::measure(GROUPS, PER_PAGE) {
        Ok(figures) => {
            println!("{}", figures.report());
            if figures.pages() > 2.0 {
                eprintln!("goal missed: more than two pages in memory while streaming");
                std::process::exit(1);
            }
        }
        Err(error) => {
            eprintln!("data_heap: {error}");
            std::process::exit(1);
        }
    }
}
