//! The allocator of Halley's binaries (`halley`, the bench app) and a trimmer that hands memory
//! freed by departed clients back to the operating system.
//!
//! mimalloc gives free memory back (purges it) only when an allocating thread passes through
//! its arena code after a delay. A server whose crowd just left allocates little and so keeps its
//! peak: after 5,000 WebSocket clients connected and left, 30 MB stayed resident for 0.5 MB
//! still allocated. [`init`] forces those purges on a schedule from a thread of its
//! own; a pass costs ~30 µs under load and about half a millisecond after a crowd left.
//!
//! A pass can only collect the heap of the thread that runs it (mimalloc's heaps are per
//! thread): a block freed by another thread waits on its page's list until the owner collects,
//! and an idle worker never does, so its pages stay resident for blocks already freed. Tokio
//! moves tasks between workers, so most of a departed connection is freed that way. The
//! runtime from [`runtime`] therefore has each worker collect its own heap the first time it
//! goes idle after each pass of the trimmer.
//!
//! Purges alone are not enough on Linux: mimalloc marks its arena `MADV_HUGEPAGE`, so the
//! kernel backs it with 2 MiB transparent huge pages (and khugepaged collapses more of it over
//! time). A huge page is resident whole while any part of it is in use, and freeing 64 KiB
//! inside one only splits it lazily. After a 10-minute soak 6 MiB of the 18 MiB left were huge
//! pages around 43 mostly empty mimalloc pages. [`init`] therefore turns transparent huge pages
//! off for the process when it starts the trimmer.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Passes of the trimmer so far; a worker collects when it sees a number it has not seen.
static PASSES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COLLECTED_AT: Cell<u64> = const { Cell::new(0) };
}

/// The global allocator the binaries install:
/// `#[global_allocator] static ALLOCATOR: halley::memory::Allocator = halley::memory::Allocator;`
pub use mimalloc::MiMalloc as Allocator;

/// Sets the process up to hand memory back: turns transparent huge pages off (where the
/// kernel allows it) and starts a thread that calls [`trim`] every `every`; fails only when
/// that thread cannot start. Zero leaves the allocator as it is (huge pages
/// allowed, no trimming). Meaningful only with [`Allocator`] as the global allocator; call it
/// before the runtime starts.
pub fn init(every: Duration) -> std::io::Result<()> {
    if every.is_zero() {
        return Ok(());
    }
    // Best effort: a kernel or sandbox that refuses leaves huge pages on, which costs memory
    // after a crowd leaves, not correctness; the server must still start.
    let _ = disable_huge_pages();
    std::thread::Builder::new()
        .name("halley-trim".into())
        .stack_size(256 * 1024)
        .spawn(move || loop {
            std::thread::sleep(every);
            PASSES.fetch_add(1, Ordering::Relaxed);
            trim();
        })?;
    Ok(())
}

/// The multi-thread runtime of Halley's binaries: tokio's defaults, plus each worker
/// collecting its own heap when it goes idle after a pass of the trimmer (see the module).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_if_trimmed)
        .build()
}

/// Collects this thread's heap once per pass of the trimmer: a relaxed load and a
/// thread-local read when there is nothing to do.
fn collect_if_trimmed() {
    let passes = PASSES.load(Ordering::Relaxed);
    COLLECTED_AT.with(|seen| {
        if seen.get() != passes {
            seen.set(passes);
            trim();
        }
    });
}

/// Turns transparent huge pages off for this process: for its existing mappings and those to
/// come (the kernel checks the flag at each fault and in khugepaged).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers (no pointer) and only sets a flag of this
    // process's memory descriptor; it cannot affect memory safety.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_huge_pages() -> std::io::Result<()> {
    Ok(())
}

/// Collects the calling thread's heap (blocks other threads freed, empty pages) and returns
/// the memory mimalloc holds free to the operating system now.
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: `mi_collect` takes no pointer and has no precondition; mimalloc documents it as
    // callable from any thread at any time. It frees only pages without a live block and
    // decommits arena memory no allocation uses, so no memory the program holds is touched.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn init_turns_transparent_huge_pages_off() {
        init(Duration::from_secs(3600)).unwrap();
        // SAFETY: PR_GET_THP_DISABLE takes no pointer; it returns the process's flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
