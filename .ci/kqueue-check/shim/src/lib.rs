//! The real libc plus FreeBSD's kqueue definitions, copied from libc
//! 0.2.191 (`unix/bsd/mod.rs`, `unix/bsd/freebsdlike/mod.rs`,
//! `unix/bsd/freebsdlike/freebsd/mod.rs` and `freebsd13/mod.rs`), so that
//! the kqueue backend can be type-checked on Linux. Never linked.
#![allow(non_camel_case_types)]

pub use real_libc::*;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct kevent {
    pub ident: uintptr_t,
    pub filter: c_short,
    pub flags: c_ushort,
    pub fflags: c_uint,
    pub data: i64,
    pub udata: *mut c_void,
    pub ext: [u64; 4],
}

extern "C" {
    pub fn kqueue() -> c_int;
    pub fn kevent(
        kq: c_int,
        changelist: *const kevent,
        nchanges: c_int,
        eventlist: *mut kevent,
        nevents: c_int,
        timeout: *const timespec,
    ) -> c_int;
}

pub const EVFILT_READ: i16 = -1;
pub const EVFILT_WRITE: i16 = -2;
pub const EVFILT_VNODE: i16 = -4;
pub const EVFILT_PROC: i16 = -5;
pub const EVFILT_USER: i16 = -11;
pub const EV_ADD: u16 = 0x1;
pub const EV_DELETE: u16 = 0x2;
pub const EV_ONESHOT: u16 = 0x10;
pub const EV_CLEAR: u16 = 0x20;
pub const EV_RECEIPT: u16 = 0x40;
pub const EV_EOF: u16 = 0x8000;
pub const EV_ERROR: u16 = 0x4000;
pub const NOTE_TRIGGER: u32 = 0x01000000;
pub const NOTE_DELETE: u32 = 0x00000001;
pub const NOTE_WRITE: u32 = 0x00000002;
pub const NOTE_EXTEND: u32 = 0x00000004;
pub const NOTE_ATTRIB: u32 = 0x00000008;
pub const NOTE_LINK: u32 = 0x00000010;
pub const NOTE_RENAME: u32 = 0x00000020;
pub const NOTE_REVOKE: u32 = 0x00000040;
pub const NOTE_EXIT: u32 = 0x80000000;
