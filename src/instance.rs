//! Which dingrec process this is: `hostname:pid`, written on every attempt it claims and shown in
//! `/readyz`, so the audit log says which machine and process made each call.

use std::sync::OnceLock;

/// This machine's name (the kernel's), or "localhost" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `hostname:pid` of this process, read once.
pub fn this() -> &'static str {
    static THIS: OnceLock<String> = OnceLock::new();
    THIS.get_or_init(|| format!("{}:{}", hostname(), std::process::id()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_machine_and_the_process() {
        let this = super::this();
        let (host, pid) = this.rsplit_once(':').expect("host:pid");
        assert!(!host.is_empty());
        assert_eq!(pid, std::process::id().to_string());
    }
}
