//! Live heap bytes per idle downstream connection, counted exactly by a wrapping allocator
//! (allocator fragmentation aside). Run: cargo run --release --example conn_memory [N] [driver]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocation counts by size (power-of-two buckets) while RECORD is set.
static RECORD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Size and alignment of the last allocation over 4 KiB seen while recording.
static BIG: AtomicIsize = AtomicIsize::new(0);
static BIG_ALIGN: AtomicIsize = AtomicIsize::new(0);
static BUCKETS: [AtomicIsize; 32] = [const { AtomicIsize::new(0) }; 32];

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        if RECORD.load(Ordering::Relaxed) {
            BUCKETS[l.size().next_power_of_two().trailing_zeros() as usize].fetch_add(1, Ordering::Relaxed);
            if l.size() > 4096 {
                BIG.store(l.size() as isize, Ordering::Relaxed);
                BIG_ALIGN.store(l.align() as isize, Ordering::Relaxed);
            }
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let echo = ringway_bench::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), 1, Default::default()).unwrap();
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = \"{}\"\n[[listener]]\nname = \"t\"\naddress = \"127.0.0.1:0\"\nroutes = [{{ cluster = \"e\" }}]\n\
         [[cluster]]\nname = \"e\"\nendpoints = [\"{}\"]\n",
        std::env::args().nth(2).unwrap_or_else(|| "auto".into()),
        echo.addr
    );
    let server = ringway::control::Server::start(ringway::config::Config::parse(&toml).unwrap()).unwrap();
    let addr = server.local_addr("t").unwrap();
    let mut keep = vec![std::net::TcpStream::connect(addr).unwrap()];
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = LIVE.load(Ordering::Relaxed);
    RECORD.store(true, Ordering::Relaxed);
    for _ in 0..n {
        keep.push(std::net::TcpStream::connect(addr).unwrap());
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = LIVE.load(Ordering::Relaxed);
    RECORD.store(false, Ordering::Relaxed);
    for (i, b) in BUCKETS.iter().enumerate() {
        let c = b.load(Ordering::Relaxed);
        if c > 0 {
            println!("  allocations of <= {:>8} bytes: {:.2} per connection", 1usize << i, c as f64 / n as f64);
        }
    }
    println!(
        "  last allocation over 4 KiB: {} bytes, align {}",
        BIG.load(Ordering::Relaxed),
        BIG_ALIGN.load(Ordering::Relaxed)
    );
    println!("{n} idle connections: {} live heap bytes each", (after - before) / n as isize);
}
