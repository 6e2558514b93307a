//! The oldest release of each kqueue OS this crate runs on, checked when a
//! selector is made, so that an older system fails with an error naming its
//! version instead of with an `EINVAL` from deep inside `kevent(2)`.
//!
//! | OS | minimum | what it needs |
//! |---|---|---|
//! | NetBSD | 10.0 | `EVFILT_USER` (the waker) and `EV_RECEIPT` (registration results), both new in NetBSD 10; before it there is no replacement short of a self-pipe, which the waker does not carry there |
//! | FreeBSD | 12.0 | `SO_REUSEPORT_LB` (12.0) for `--threads N`; `PROC_PDEATHSIG_CTL` (11.2); Rust's std itself targets 12 |
//! | macOS | Rust's own minimum | `EVFILT_USER`, `EV_RECEIPT` and `NOTE_EXIT` are much older (10.6) |
//! | OpenBSD | Rust's own minimum | `EV_RECEIPT`; the waker is a pipe, as OpenBSD before 7.8 has no `EVFILT_USER` |
//! | DragonFly | Rust's own minimum | `EVFILT_USER`, `EV_RECEIPT` |
//!
//! The release is read with `uname(3)` once per process. The rule is a pure
//! function of `(sysname, release)`, tested on Linux with the strings each
//! OS reports.

use std::io;

/// A release below which an OS is refused, and why.
struct Minimum {
    /// `uname`'s `sysname`.
    sysname: &'static str,
    /// The oldest major release that works.
    major: u32,
    /// What an older one lacks, for the error.
    lacks: &'static str,
}

const MINIMUMS: &[Minimum] = &[
    Minimum {
        sysname: "NetBSD",
        major: 10,
        lacks: "EVFILT_USER and EV_RECEIPT in kqueue(2)",
    },
    Minimum {
        sysname: "FreeBSD",
        major: 12,
        lacks: "SO_REUSEPORT_LB, and the ABI Rust's std is built for",
    },
];

/// Whether OS `sysname` at release `release` (as `uname` reports them, for
/// example `NetBSD` and `9.3`, or `FreeBSD` and `14.1-RELEASE-p3`) is new
/// enough.
///
/// # Errors
/// `Unsupported`, naming the OS, its release and the minimum.
pub(crate) fn check(sysname: &str, release: &str) -> io::Result<()> {
    let Some(min) = MINIMUMS.iter().find(|m| m.sysname == sysname) else {
        return Ok(());
    };
    let digits = release.split(|c: char| !c.is_ascii_digit()).next();
    match digits.and_then(|d| d.parse::<u32>().ok()) {
        Some(major) if major >= min.major => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{sysname} {release} is too old for packet: it needs {sysname} {} or later ({})",
                min.major, min.lacks
            ),
        )),
    }
}

/// [`check`] for the running system, read once per process. The kqueue
/// backend's `Selector::new` calls it; Linux has no entry in the table, so
/// epoll's does not (and this module is built there for its tests only).
///
/// # Errors
/// As [`check`]; `uname(3)` itself does not fail on these systems.
pub(crate) fn check_running_os() -> io::Result<()> {
    static VERDICT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let verdict = VERDICT.get_or_init(|| {
        let (sysname, release) = uname().map_err(|e| e.to_string())?;
        check(&sysname, &release).map_err(|e| e.to_string())
    });
    verdict
        .clone()
        .map_err(|msg| io::Error::new(io::ErrorKind::Unsupported, msg))
}

/// `uname(3)`'s `sysname` and `release`.
fn uname() -> io::Result<(String, String)> {
    // SAFETY: all-zero is a valid utsname.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a live, writable utsname.
    crate::cvt(unsafe { libc::uname(&mut name) })?;
    let text = |field: &[libc::c_char]| {
        let bytes: Vec<u8> = field
            .iter()
            .map(|c| c.to_ne_bytes()[0])
            .take_while(|&b| b != 0)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok((text(&name.sysname), text(&name.release)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netbsd_before_10_is_refused_with_its_version_named() {
        for release in ["9.3", "9.99.14", "8.2_STABLE"] {
            let e = check("NetBSD", release).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            let msg = e.to_string();
            assert!(msg.contains(&format!("NetBSD {release}")), "{msg}");
            assert!(msg.contains("NetBSD 10 or later"), "{msg}");
            assert!(msg.contains("EVFILT_USER"), "{msg}");
        }
        check("NetBSD", "10.0").unwrap();
        check("NetBSD", "10.99.12").unwrap();
    }

    #[test]
    fn freebsd_releases_are_read_from_their_uname_form() {
        check("FreeBSD", "14.1-RELEASE-p3").unwrap();
        check("FreeBSD", "12.0-CURRENT").unwrap();
        let e = check("FreeBSD", "11.4-RELEASE").unwrap_err();
        assert!(e.to_string().contains("FreeBSD 12 or later"), "{e}");
        assert!(
            check("FreeBSD", "garbled").is_err(),
            "an unreadable release is refused"
        );
    }

    #[test]
    fn systems_without_a_minimum_pass_and_this_one_is_read() {
        check("OpenBSD", "7.6").unwrap();
        check("Darwin", "24.1.0").unwrap();
        let (sysname, release) = uname().unwrap();
        assert!(!sysname.is_empty());
        assert!(
            release.starts_with(|c: char| c.is_ascii_digit()),
            "{release}"
        );
        check_running_os().unwrap();
    }
}
