//! This machine's name, for the events' `host` field.

use std::ffi::{CStr, CString};

/// The hostname (`gethostname`), or with `fqdn` its canonical name as the resolver gives it
/// (`getaddrinfo` with `AI_CANONNAME`), falling back to the plain hostname.
pub fn hostname(fqdn: bool) -> String {
    let mut buf = [0u8; 256];
    // Safety: the buffer is writable for its full length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if fqdn {
        canonical_name(&name).unwrap_or(name)
    } else {
        name
    }
}

fn canonical_name(name: &str) -> Option<String> {
    let c_name = CString::new(name).ok()?;
    // Safety: zeroed addrinfo is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // Safety: valid C string, hints and out-pointer; the result is freed below.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // Safety: `res` is a valid list from getaddrinfo; ai_canonname is null or a C string.
    let canon = unsafe {
        let p = (*res).ai_canonname;
        let canon = (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned());
        libc::freeaddrinfo(res);
        canon
    };
    canon.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_matches_python() {
        let out = std::process::Command::new("python3")
            .args(["-c", "import socket; print(socket.gethostname())"])
            .output()
            .expect("python3 runs");
        let expected = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(super::hostname(false), expected);
        assert!(!super::hostname(true).is_empty());
    }
}
