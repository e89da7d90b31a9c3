//! The allocator tuning of `hyperd::memory`: large buffers freed in a burst of API traffic
//! are reused, not mapped afresh (and faulted in page by page) each time.

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

#[test]
fn freed_megabyte_buffers_are_reused_without_faulting_again() {
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
}
