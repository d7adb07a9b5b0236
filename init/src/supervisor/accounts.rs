//! Users and groups from `/etc/passwd` and `/etc/group`, read directly:
//! PID1 has no NSS (no glibc modules, no name service daemon), and the
//! files are all there is on Berth.

use std::path::Path;

use crate::unit::Account;

/// The most [`read_database`] reads of `/etc/passwd` or `/etc/group`, in
/// bytes: a machine's accounts are kilobytes; more is an error, not PID1's
/// memory.
pub const DATABASE_LIMIT: u64 = 4 << 20;

/// The text of `/etc/passwd` or `/etc/group` at `path`; empty when there is
/// none (then only numeric ids resolve). Read as a regular file of at most
/// [`DATABASE_LIMIT`] bytes, so a FIFO or a device put there is an error
/// naming the path, not a hung PID1. Errors: the file is not a regular
/// file, too large, or unreadable.
pub fn read_database(path: &Path) -> Result<String, String> {
    use berth_layout::regular_file::{read, ReadError};
    match read(path, DATABASE_LIMIT) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Who a service runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included); `None`: leave them
    /// as they are (root's).
    pub groups: Option<Vec<u32>>,
    /// The user's name and home, for `USER`, `LOGNAME` and `HOME`, when a
    /// user was named or found in passwd.
    pub user: Option<String>,
    pub home: Option<String>,
}

impl Credentials {
    pub const ROOT: Credentials = Credentials { uid: 0, gid: 0, groups: None, user: None, home: None };

    /// Whether the process must change identity.
    pub fn is_root(&self) -> bool {
        self.uid == 0 && self.gid == 0 && self.groups.is_none()
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let _gecos = f.next()?;
        let home = f.next()?;
        Some(PasswdEntry { name, uid, gid, home })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f.next().unwrap_or("");
        Some(GroupEntry { name, gid, members })
    })
}

/// Resolves a unit's `user` and `group` against the texts of
/// `/etc/passwd` and `/etc/group`.
///
/// - No user: root; a group, if given, becomes its group.
/// - A user: its uid; its primary group from passwd unless `group` says
///   otherwise; supplementary groups: every group listing it as a member.
/// - A numeric user not in passwd needs a `group` (there is no primary
///   group to take, and falling back to root's would be a surprise).
pub fn resolve(
    user: Option<&Account>,
    group: Option<&Account>,
    passwd: &str,
    groups: &str,
) -> Result<Credentials, String> {
    let explicit_gid = match group {
        None => None,
        Some(Account::Id(id)) => Some(*id),
        Some(Account::Name(n)) => match group_entries(groups).find(|g| g.name == n) {
            Some(g) => Some(g.gid),
            None => return Err(format!("group {n:?} is not in /etc/group")),
        },
    };
    let Some(user) = user else {
        return Ok(Credentials { gid: explicit_gid.unwrap_or(0), ..Credentials::ROOT });
    };
    let entry = match user {
        Account::Name(n) => match passwd_entries(passwd).find(|p| p.name == n) {
            Some(p) => Some(p),
            None => return Err(format!("user {n:?} is not in /etc/passwd")),
        },
        Account::Id(id) => passwd_entries(passwd).find(|p| p.uid == *id),
    };
    let uid = match (user, &entry) {
        (Account::Id(id), _) => *id,
        (Account::Name(_), Some(p)) => p.uid,
        (Account::Name(n), None) => return Err(format!("user {n:?} is not in /etc/passwd")),
    };
    let gid = match (explicit_gid, &entry) {
        (Some(g), _) => g,
        (None, Some(p)) => p.gid,
        (None, None) => {
            return Err(format!("user {uid} is not in /etc/passwd, so it has no primary group: set service.group"))
        }
    };
    let mut supplementary = vec![gid];
    if let Some(p) = &entry {
        for g in group_entries(groups) {
            if g.members.split(',').any(|m| m.trim() == p.name) && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(Credentials {
        uid,
        gid,
        groups: Some(supplementary),
        user: entry.as_ref().map(|p| p.name.to_owned()),
        home: entry.as_ref().map(|p| p.home.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\n# comment\netcd:x:990:980:etcd:/var/lib/etcd:/sbin/nologin\nbroken line\n";
    const GROUP: &str = "root:x:0:\netcd:x:980:\ndisk:x:6:etcd,other\nwheel:x:10:other\n";

    fn name(s: &str) -> Account {
        Account::Name(s.into())
    }

    #[test]
    fn no_user_is_root_with_the_group_if_given() {
        assert_eq!(resolve(None, None, PASSWD, GROUP).unwrap(), Credentials::ROOT);
        let c = resolve(None, Some(&name("disk")), PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (0, 6, None));
    }

    #[test]
    fn a_named_user_gets_its_primary_and_member_groups_and_home() {
        let c = resolve(Some(&name("etcd")), None, PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (990, 980));
        assert_eq!(c.groups, Some(vec![980, 6]));
        assert_eq!(c.user.as_deref(), Some("etcd"));
        assert_eq!(c.home.as_deref(), Some("/var/lib/etcd"));
        let c = resolve(Some(&name("etcd")), Some(&Account::Id(10)), PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (990, 10, Some(vec![10, 6])));
    }

    #[test]
    fn numeric_ids_resolve_with_or_without_an_entry() {
        let c = resolve(Some(&Account::Id(990)), None, PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.user.as_deref()), (990, 980, Some("etcd")));
        let c = resolve(Some(&Account::Id(4242)), Some(&Account::Id(4242)), PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups, c.user), (4242, 4242, Some(vec![4242]), None));
        let err = resolve(Some(&Account::Id(4242)), None, PASSWD, GROUP).unwrap_err();
        assert!(err.contains("set service.group"), "{err}");
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve(Some(&name("nobody")), None, PASSWD, GROUP).unwrap_err().contains("/etc/passwd"));
        assert!(resolve(None, Some(&name("nogroup")), PASSWD, GROUP).unwrap_err().contains("/etc/group"));
    }
}
