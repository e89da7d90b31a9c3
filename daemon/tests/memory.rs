//! The allocator tuning of `hyperd::memory`: large buffers freed in a burst of API traffic
//! are reused, not mapped afresh (and faulted in page by page) each time, yet a thread's
//! arena does not keep megabytes resident after the burst.

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is Linux's.
    #[allow(unsafe_code)]
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    usage.ru_minflt
}

/// The process's resident memory, in KiB.
fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// One test: both halves watch the whole process, so nothing else may run meanwhile.
#[test]
fn freed_megabyte_buffers_are_reused_but_not_hoarded() {
    hyperd::memory::configure();
    // A thread of its own, as the daemon's blocking reads: its own allocator arena.
    let faults = std::thread::spawn(|| {
        const PAGES: i64 = 256;
        let before = minor_faults();
        for i in 0..64u8 {
            // Written whole, as a read fills its buffer; freed before the next, as a
            // block is after it was sent.
            let buffer = vec![i; (PAGES * 4096) as usize];
            std::hint::black_box(&buffer);
        }
        minor_faults() - before
    })
    .join()
    .unwrap();
    // The first buffer's pages, and some slack for the arena's bookkeeping; 64 buffers
    // of 256 pages each (16,384 faults) when each is trimmed away after its free.
    assert!(
        faults < 1024,
        "{faults} minor faults for 64 buffers of 1 MiB"
    );

    // A burst of 24 buffers in a thread's arena, freed from the last: the periodic trim
    // does not shrink that arena's top, so only the trim threshold bounds what stays.
    let before = rss_kib();
    std::thread::spawn(|| {
        let mut buffers: Vec<Vec<u8>> = (1..=24u8).map(|i| vec![i; 1 << 20]).collect();
        while let Some(buffer) = buffers.pop() {
            drop(buffer);
        }
    })
    .join()
    .unwrap();
    hyperd::memory::trim();
    let kept = rss_kib() - before;
    assert!(
        kept < 4096,
        "{kept} KiB still resident after freeing 24 MiB"
    );
}
