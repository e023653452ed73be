//! Readings from /proc: a process's RSS and CPU time, and our own open-files limit.

/// Clock ticks per second of utime/stime in /proc/<pid>/stat. USER_HZ is 100 on every Linux
/// architecture this runs on (it is part of the kernel ABI, whatever CONFIG_HZ is).
const CLK_TCK: f64 = 100.0;

/// `pid` as a /proc path component: a number, or `self`.
fn dir(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".into(),
    }
}

/// Resident set size in KiB (VmRSS), or None when unreadable.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident set size in KiB (VmHWM).
pub fn hwm_kib(pid: Option<u32>) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

/// Reads a /proc file through a descriptor opened on first use and kept: with thousands of
/// client sockets open, a fresh open() can fail with EMFILE right when a reading matters.
/// procfs regenerates the content on every read from offset 0.
fn read_proc(path: String) -> Option<String> {
    use std::collections::HashMap;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::{Mutex, OnceLock};
    static OPEN: OnceLock<Mutex<HashMap<String, std::fs::File>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !open.contains_key(&path) {
        let file = std::fs::File::open(&path).ok()?;
        open.insert(path.clone(), file);
    }
    let file = open.get_mut(&path)?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

fn status_field(pid: Option<u32>, name: &str) -> Option<u64> {
    let text = read_proc(format!("{}/status", dir(pid)))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Open file descriptors of the process (entries of /proc/<pid>/fd): its sockets, mostly.
pub fn fd_count(pid: Option<u32>) -> Option<u64> {
    Some(std::fs::read_dir(format!("{}/fd", dir(pid))).ok()?.count() as u64)
}

/// User + system CPU seconds the process has used so far.
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let text = read_proc(format!("{}/stat", dir(pid)))?;
    // The command name (field 2) may hold spaces; fields resume after its closing paren.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLK_TCK)
}

/// The soft limit on open files of this process (from /proc/self/limits).
pub fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// TCP sockets in TIME_WAIT on this host (from /proc/net/sockstat). Many of them (left by a
/// previous run) slow down the kernel's choice of source ports, and so the connect rate.
pub fn tcp_time_wait() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}
