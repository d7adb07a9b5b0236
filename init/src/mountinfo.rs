//! /proc/self/mounts, read by early boot (what is mounted already) and by
//! shutdown (what to unmount).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
}

/// Undoes the octal escapes (`\040` for a space) the kernel writes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(digits) = b.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(v) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts in the order they were made.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let source = unescape(f.next()?);
            let target = unescape(f.next()?);
            let fstype = unescape(f.next()?);
            Some(MountEntry { source, target, fstype })
        })
        .collect()
}

pub fn is_mountpoint(text: &str, target: &str) -> bool {
    parse(text).iter().any(|m| m.target == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let t = "/dev/dm-0 / erofs ro 0 0\n/dev/vda4 /var/a\\040b ext4 rw 0 0\n";
        let m = parse(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].target, "/var/a b");
        assert_eq!(m[1].fstype, "ext4");
        assert!(is_mountpoint(t, "/"));
        assert!(!is_mountpoint(t, "/var"));
    }
}
