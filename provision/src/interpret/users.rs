//! `users` and `ssh_authorized_keys`.

use crate::diag::Place;
use crate::model::{Item, User};
use crate::tree::{Node, Value};

use super::read::Ctx;
use super::schema::USER_KEYS;
use super::valid;

/// `users`: a list (items: `default`, a name, or a mapping), a
/// comma-separated string of names, or a mapping NAME -> settings.
pub(crate) fn users(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<User> {
    let mut out = Vec::new();
    match &n.value {
        Value::Null => {}
        Value::Scalar(_) => {
            for item in cx.strings(n, at, true) {
                if let Some(u) = named(cx, &item.value, &item.at) {
                    out.push(u);
                }
            }
        }
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = at.item(item.line, i);
                match &item.value {
                    Value::Map(_) => {
                        if let Some(u) = user(cx, item, &p, None) {
                            out.push(u);
                        }
                    }
                    Value::Scalar(_) => {
                        if let Some(name) = cx.nonempty(item, &p) {
                            if let Some(u) = named(cx, name.trim(), &p) {
                                out.push(u);
                            }
                        }
                    }
                    _ => cx.error(&p, format!("expected `default`, a user name or a mapping, found {}", item.kind())),
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let p = at.child(k.line, &k.name);
                match &v.value {
                    Value::Null => {
                        if let Some(u) = named(cx, &k.name, &p) {
                            out.push(u);
                        }
                    }
                    _ => {
                        if let Some(u) = user(cx, v, &p, Some(&k.name)) {
                            out.push(u);
                        }
                    }
                }
            }
        }
        Value::Binary(_) => cx.error(at, "expected a list of users, found binary data"),
    }
    let mut seen = std::collections::HashSet::new();
    for u in &out {
        if !seen.insert(u.name.as_str()) {
            cx.error(&u.at, format!("user `{}` is given twice", u.name));
        }
    }
    out
}

fn blank(name: &str, is_default: bool, at: &Place) -> User {
    User { is_default, ..User::new(name, at.clone()) }
}

/// A user given by name alone; `default` is the default user, root.
fn named(cx: &mut Ctx, name: &str, at: &Place) -> Option<User> {
    if name == "default" {
        return Some(blank("root", true, at));
    }
    match valid::account(name) {
        Ok(()) => Some(blank(name, false, at)),
        Err(e) => {
            cx.error(at, e);
            None
        }
    }
}

/// The cloud-init spellings that were renamed: old -> new.
const RENAMED: &[(&str, &str)] = &[
    ("lock-passwd", "lock_passwd"),
    ("primary-group", "primary_group"),
    ("ssh-authorized-keys", "ssh_authorized_keys"),
    ("hashed-passwd", "hashed_passwd"),
    ("plain-text-passwd", "plain_text_passwd"),
    ("no-create-home", "no_create_home"),
    ("no-log-init", "no_log_init"),
    ("no-user-group", "no_user_group"),
    ("create-groups", "create_groups"),
    ("selinux-user", "selinux_user"),
    ("ssh-import-id", "ssh_import_id"),
    ("ssh-redirect-user", "ssh_redirect_user"),
];

/// A user's mapping. Without `name` (and not given by a key), it is the
/// `default` entry: the settings of root.
fn user(cx: &mut Ctx, n: &Node, at: &Place, key_name: Option<&str>) -> Option<User> {
    let entries = cx.map(n, at)?;
    let name = match (key_name, entries.iter().find(|(k, _)| k.name == "name")) {
        (Some(k), _) => Some(k.to_string()),
        (None, Some((k, v))) => Some(cx.nonempty(v, &at.child(k.line, "name"))?),
        (None, None) => None,
    };
    // A name-less entry of snap's (`- snapuser: EMAIL`): that user is made
    // by snapd, which Berth lacks; not the default user.
    if name.is_none() {
        if let Some((k, _)) = entries.iter().find(|(k, _)| k.name == "snapuser") {
            cx.warn(&at.child(k.line, "snapuser"), "not implemented on Berth (no snapd): this entry is ignored");
            return None;
        }
    }
    let mut u = match name.as_deref() {
        None | Some("default") => blank("root", true, at),
        Some(name) => {
            if let Err(e) = valid::account(name) {
                cx.error(at, e);
                return None;
            }
            blank(name, false, at)
        }
    };
    let mut ok = true;
    for (k, v) in entries {
        let p = at.child(k.line, &k.name);
        let mut key = k.name.as_str();
        if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == key) {
            cx.warn(&p, format!("deprecated in cloud-init: use `{new}`"));
            key = new;
        }
        let before = cx.errors.len();
        match key {
            "name" => {}
            "gecos" => u.gecos = cx.string(v, &p).and_then(|g| passwd_field(cx, g, &p)),
            "groups" => {
                for g in cx.strings(v, &p, true) {
                    match valid::account(&g.value) {
                        Ok(()) => u.groups.push(g.value),
                        Err(e) => cx.error(&g.at, e),
                    }
                }
            }
            "primary_group" => {
                if let Some(g) = cx.nonempty(v, &p) {
                    match valid::account(&g) {
                        Ok(()) => u.primary_group = Some(g),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "shell" => {
                if let Some(s) = cx.nonempty(v, &p).and_then(|s| passwd_field(cx, s, &p)) {
                    match valid::abs_path(&s) {
                        Ok(s) => u.shell = Some(s),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "homedir" => {
                if let Some(s) = cx.nonempty(v, &p).and_then(|s| passwd_field(cx, s, &p)) {
                    match valid::writable_path(&s) {
                        Ok(s) => u.homedir = Some(s),
                        Err(e) => cx.error(&p, format!("a home directory must be writable: {e}")),
                    }
                }
            }
            "uid" => u.uid = uid(cx, v, &p),
            "system" => u.system = cx.bool(v, &p).unwrap_or(false),
            "lock_passwd" => u.lock_passwd = cx.bool(v, &p).unwrap_or(true),
            "passwd" | "hashed_passwd" => {
                if let Some(h) = cx.nonempty(v, &p) {
                    match valid::crypt_hash(&h) {
                        Ok(()) => u.passwd = Some(h),
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "plain_text_passwd" => cx.error(
                &p,
                "a plain-text password is refused on Berth: give `passwd` a crypt(3) hash (`mkpasswd -m sha-512`)",
            ),
            "ssh_authorized_keys" => u.ssh_authorized_keys = keys(cx, v, &p),
            "sudo" | "doas" => {
                cx.warn(&p, "not implemented on Berth (there is no sudo or doas: the admin is root): ignored")
            }
            other if USER_KEYS.iter().any(|(k, _)| *k == other) => cx.warn(&p, "not implemented on Berth: ignored"),
            _ => cx.unknown(&p, ""),
        }
        ok &= cx.errors.len() == before;
    }
    if u.system && u.homedir.is_none() && !u.ssh_authorized_keys.is_empty() {
        cx.error(
            at,
            "a system user has no home unless `homedir` gives one: its ssh_authorized_keys have nowhere to go",
        );
        ok = false;
    }
    ok.then_some(u)
}

/// A value written as a field of /etc/passwd (gecos, home, shell): no `:`
/// (the field separator) and no control character (a line break ends the
/// entry and starts another).
fn passwd_field(cx: &mut Ctx, s: String, at: &Place) -> Option<String> {
    if s.chars().any(|c| c == ':' || c.is_control()) {
        cx.error(at, "`:` and control characters (line breaks) cannot be in /etc/passwd's fields");
        return None;
    }
    Some(s)
}

fn uid(cx: &mut Ctx, n: &Node, at: &Place) -> Option<u32> {
    // cloud-init accepts a quoted number too (deprecated).
    if let Value::Scalar(s) = &n.value {
        if s.style == crate::tree::Style::Quoted {
            return match s.text.parse::<u32>() {
                Ok(v) => {
                    cx.warn(at, "a string uid is deprecated in cloud-init: write an integer");
                    Some(v)
                }
                Err(_) => {
                    cx.error(at, format!("expected a uid (an integer), found `{}`", s.text));
                    None
                }
            };
        }
    }
    cx.u32(n, at)
}

/// A list of SSH public keys (`TYPE BASE64 [COMMENT]`, options allowed
/// before); a single string is one key.
pub(crate) fn keys(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<Item<String>> {
    let items = match &n.value {
        Value::Scalar(_) => cx.nonempty(n, at).map(|s| vec![Item { value: s, at: at.clone() }]).unwrap_or_default(),
        _ => cx.strings(n, at, false),
    };
    let mut out = Vec::new();
    for item in items {
        let k = item.value.trim().to_string();
        if k.contains('\n') || k.split_whitespace().count() < 2 {
            cx.error(&item.at, "expected an SSH public key on one line (`ssh-ed25519 AAAA... comment`)");
        } else {
            out.push(Item { value: k, at: item.at });
        }
    }
    out
}
