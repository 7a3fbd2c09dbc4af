//! Thread priorities: the polling thread keeps the process's nice value, the
//! threads that serve HTTP and store callbacks run a few steps nicer, so that
//! a flood of callbacks or scrapes cannot delay polls between their permit
//! and the socket (which would bunch them at the API beyond the budget).

use std::sync::OnceLock;

/// How much nicer the serving threads are than the polling thread.
const SERVING_NICE_STEPS: i32 = 5;

/// The nice value the process started with.
static BASE: OnceLock<i32> = OnceLock::new();

/// Notes the process's nice value; call first thing on the main thread.
pub fn remember_base() {
    BASE.get_or_init(this_thread);
}

/// Makes the calling thread [`SERVING_NICE_STEPS`] nicer than the process
/// started; best effort (on Linux a nice value is per thread and inherited
/// by the threads it spawns; elsewhere nothing changes).
pub fn serve_at_lower_priority() {
    let base = *BASE.get_or_init(this_thread);
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on the calling thread's own id; no memory is shared.
    unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            base + SERVING_NICE_STEPS,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = base;
}

fn this_thread() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: as above.
    unsafe {
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    0
}
