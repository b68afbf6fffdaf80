//! Sparse preallocation for a daemon: a seccomp filter on the spawning thread, inherited
//! by the child, under which `fallocate(2)` fails with EOPNOTSUPP, as it does on a file
//! system without it.
//!
//! etcd preallocates each WAL segment (64 MB) and the next one with `fallocate`, and
//! falls back to `ftruncate`, a sparse file, where the file system has no `fallocate`
//! (its own code path, meant for such file systems). The run directory is on tmpfs,
//! where `fallocate` takes real, zeroed memory: 125 MB for every member before it wrote
//! a byte, 500 MB for the default scenario's four, and the CPU to clear it during the
//! election. A sparse segment takes memory only as etcd writes to it.

use std::io;

/// The audit architecture the filter checks first, so a system call of another ABI is
/// never mistaken for `fallocate` (None: an architecture the filter is not written for).
const AUDIT_ARCH: Option<u32> = if cfg!(target_arch = "x86_64") {
    Some(0xC000_003E)
} else if cfg!(target_arch = "aarch64") {
    Some(0xC000_00B7)
} else {
    None
};

/// Offsets of `arch` and `nr` in the kernel's `struct seccomp_data`.
const ARCH_OFFSET: u32 = 4;
const NR_OFFSET: u32 = 0;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Installs the filter on the calling thread (and every process it starts from now on).
/// Only for a thread that starts the daemon and then ends: the filter can never be
/// taken off. Returns false, changing nothing, on an architecture it is not written for.
pub(super) fn deny_fallocate_on_this_thread() -> io::Result<bool> {
    let Some(arch) = AUDIT_ARCH else {
        return Ok(false);
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let allow = statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
    let program = [
        statement(load, ARCH_OFFSET),
        // Another ABI: allowed, untouched (to the last statement).
        jump_if_equal(arch, 0, 3),
        statement(load, NR_OFFSET),
        jump_if_equal(libc::SYS_fallocate as u32, 0, 1),
        statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EOPNOTSUPP as u32,
        ),
        allow,
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls on this thread; `prog` and the program it points to
    // outlive the call, which copies them into the kernel.
    unsafe {
        // Required unless the caller has CAP_SYS_ADMIN; it only stops a later exec from
        // gaining privileges (etcd runs as root and execs nothing).
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn fallocate(path: &std::path::Path) -> io::Result<()> {
        let f = std::fs::File::create(path)?;
        // SAFETY: fallocate on an open file descriptor we own.
        match unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[test]
    fn fallocate_fails_as_unsupported_on_the_filtered_thread_and_its_children_only() {
        use std::os::unix::fs::DirBuilderExt;
        // A new directory of our own (creating it fails rather than follow anything there).
        let dir = std::env::temp_dir().join(format!("knetsim-sparse-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        let (a2, b2) = (a.clone(), b.clone());
        let filtered = std::thread::spawn(move || {
            if !deny_fallocate_on_this_thread().unwrap() {
                return None;
            }
            let own = fallocate(&a2);
            // A child started now inherits the filter: util-linux's fallocate(1).
            let child = std::process::Command::new("fallocate")
                .args(["-l", "1M"])
                .arg(&b2)
                .output();
            Some((own, child))
        })
        .join()
        .unwrap();
        let unfiltered = fallocate(&c);
        let _ = std::fs::remove_dir_all(&dir);
        let Some((own, child)) = filtered else {
            println!("skipped: the filter is not written for this architecture");
            return;
        };
        assert_eq!(own.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
        match child {
            Ok(out) => {
                assert!(
                    !out.status.success(),
                    "fallocate(1) succeeded under the filter"
                );
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("not supported"), "{err}");
            }
            Err(e) => println!("fallocate(1) not run ({e}); the thread's own call was checked"),
        }
        // The rest of the process (this test's thread) is untouched; a file system
        // without fallocate would say so the same way for both.
        match unfiltered {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                println!(
                    "skipped the unfiltered check: {} has no fallocate",
                    dir.display()
                )
            }
            Err(e) => panic!("fallocate without the filter: {e}"),
        }
    }
}
