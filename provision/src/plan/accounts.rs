//! /etc/passwd, /etc/group and /etc/shadow as tables of lines: read,
//! changed entry by entry, written back with every other line as it was.

/// One of the three files: its lines, each split at `:` (comments and
/// blank lines kept as one field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    lines: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Table {
        Table { lines: text.lines().map(|l| l.split(':').map(String::from).collect()).collect() }
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.join(":"));
            s.push('\n');
        }
        s
    }

    fn is_entry(l: &[String]) -> bool {
        l.first().is_some_and(|n| !n.is_empty() && !n.starts_with('#')) && l.len() > 1
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.lines.iter().find(|l| Self::is_entry(l) && l.first().is_some_and(|n| n == name))
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find(|l| Self::is_entry(l) && l.first().is_some_and(|n| n == name))
    }

    /// Field `i` of entry `name`.
    pub fn field(&self, name: &str, i: usize) -> Option<&str> {
        self.get(name).and_then(|l| l.get(i)).map(|s| s.as_str())
    }

    /// Sets field `i` of entry `name`, padding short lines.
    pub fn set(&mut self, name: &str, i: usize, value: &str) {
        if let Some(l) = self.get_mut(name) {
            while l.len() <= i {
                l.push(String::new());
            }
            if let Some(f) = l.get_mut(i) {
                *f = value.to_string();
            }
        }
    }

    pub fn push(&mut self, fields: Vec<String>) {
        self.lines.push(fields);
    }

    /// The numbers in field `i` of every entry (uids, gids).
    pub fn ids(&self, i: usize) -> Vec<u32> {
        self.lines.iter().filter(|l| Self::is_entry(l)).filter_map(|l| l.get(i)?.parse().ok()).collect()
    }

    /// The entry whose field `i` is `id`.
    pub fn name_by_id(&self, i: usize, id: u32) -> Option<&str> {
        self.lines
            .iter()
            .filter(|l| Self::is_entry(l))
            .find(|l| l.get(i).and_then(|f| f.parse::<u32>().ok()) == Some(id))
            .and_then(|l| l.first())
            .map(|s| s.as_str())
    }
}

/// A free id: for a regular account the one after the highest in
/// 1000..60000 (1000 for the first); for a system one the highest free
/// below 1000 (as useradd -r). `prefer` when it is free.
pub fn free_id(taken: &[u32], system: bool, prefer: Option<u32>) -> Option<u32> {
    if let Some(p) = prefer {
        if !taken.contains(&p) {
            return Some(p);
        }
    }
    if system {
        (100..1000).rev().find(|id| !taken.contains(id))
    } else {
        let next = taken.iter().filter(|&&id| (1000..60000).contains(&id)).max().map_or(1000, |m| m + 1);
        if next < 60000 {
            Some(next)
        } else {
            (1000..60000).find(|id| !taken.contains(id))
        }
    }
}

/// The three files together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accounts {
    pub passwd: Table,
    pub group: Table,
    pub shadow: Table,
}

impl Accounts {
    pub fn parse(passwd: &str, group: &str, shadow: &str) -> Accounts {
        Accounts { passwd: Table::parse(passwd), group: Table::parse(group), shadow: Table::parse(shadow) }
    }

    pub fn uid(&self, user: &str) -> Option<u32> {
        self.passwd.field(user, 2)?.parse().ok()
    }

    pub fn primary_gid(&self, user: &str) -> Option<u32> {
        self.passwd.field(user, 3)?.parse().ok()
    }

    pub fn gid(&self, group: &str) -> Option<u32> {
        self.group.field(group, 2)?.parse().ok()
    }

    pub fn home(&self, user: &str) -> Option<&str> {
        self.passwd.field(user, 5)
    }

    /// Makes group `name` when missing: gid `prefer` if free, else a free
    /// one. Its gid, or `None` when no id is left.
    pub fn ensure_group(&mut self, name: &str, system: bool, prefer: Option<u32>) -> Option<u32> {
        if let Some(gid) = self.gid(name) {
            return Some(gid);
        }
        let gid = free_id(&self.group.ids(2), system, prefer)?;
        self.group.push(vec![name.into(), "x".into(), gid.to_string(), String::new()]);
        Some(gid)
    }

    /// Adds `user` to the members of `group` (which exists).
    pub fn add_member(&mut self, group: &str, user: &str) {
        if let Some(l) = self.group.get_mut(group) {
            while l.len() < 4 {
                l.push(String::new());
            }
            if let Some(members) = l.get_mut(3) {
                let mut list: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
                if !list.contains(&user) {
                    list.push(user);
                    *members = list.join(",");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_what_they_do_not_change() {
        let text =
            "# comment\nroot:x:0:0:root:/var/root:/usr/bin/sh\n\netcd:x:101:101:etcd:/var/lib/etcd:/usr/bin/nologin\n";
        let mut t = Table::parse(text);
        assert_eq!(t.text(), text);
        t.set("etcd", 6, "/usr/bin/sh");
        assert!(t.text().contains("etcd:x:101:101:etcd:/var/lib/etcd:/usr/bin/sh\n"));
        assert_eq!(t.ids(2), vec![0, 101]);
        assert_eq!(t.name_by_id(2, 101), Some("etcd"));
    }

    #[test]
    fn free_ids() {
        assert_eq!(free_id(&[0, 101, 65534], false, None), Some(1000));
        assert_eq!(free_id(&[0, 1000, 1001, 65534], false, None), Some(1002));
        assert_eq!(free_id(&[0, 999], true, None), Some(998));
        assert_eq!(free_id(&[0, 1000], false, Some(1000)), Some(1001));
        assert_eq!(free_id(&[0], false, Some(5000)), Some(5000));
    }

    #[test]
    fn groups_are_made_and_members_added_once() {
        let mut a = Accounts::parse("", "root:x:0:\nwheel:x:10:ann\n", "");
        assert_eq!(a.ensure_group("docker", false, None), Some(1000));
        assert_eq!(a.ensure_group("wheel", false, None), Some(10));
        a.add_member("wheel", "bob");
        a.add_member("wheel", "bob");
        a.add_member("docker", "bob");
        assert_eq!(a.group.text(), "root:x:0:\nwheel:x:10:ann,bob\ndocker:x:1000:bob\n");
    }
}
