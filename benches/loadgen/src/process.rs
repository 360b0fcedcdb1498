//! This process's own resources, as every bench program sets them up: the
//! open-file limit (one descriptor per simulated client) and the core it
//! runs on (the server gets the other one).

/// Raises the soft open-file limit to the hard one; returns the limit then
/// in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// Pins this process to `core`; whether it worked.
pub fn pin_to_core(core: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid, and CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
