//! Masquerading what leaves the cluster network, and forwarding for it,
//! with iptables (the image's is the nf_tables backend) in chains of the
//! router's own, the way flannel does (`FLANNEL-POSTRTG`, `FLANNEL-FWD`).
//!
//! - nat `BERTH-ROUTER-POSTRTG` (jumped to first from POSTROUTING):
//!   `-s NET -d NET -j RETURN` (container to container: no NAT),
//!   `-s NET ! -d 224.0.0.0/4 -j MASQUERADE` (to the outside world);
//! - filter `BERTH-ROUTER-FWD` (jumped to first from FORWARD):
//!   `-s NET -j ACCEPT`, `-d NET -j ACCEPT`.
//!
//! Idempotent: a chain whose rules already match is left alone.

use std::future::Future;

use crate::ipnet::Ipv4Net;

/// One chain of the router's and where it is hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// The chain's name.
    pub name: &'static str,
    /// The built-in chain that jumps to it.
    pub hook: &'static str,
    /// Its rules, as iptables arguments after `-A NAME`.
    pub rules: Vec<Vec<String>>,
}

/// The router's chains for `network`.
pub fn chains(network: Ipv4Net) -> Vec<Chain> {
    let n = network.to_string();
    let r = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        Chain {
            table: "nat",
            name: "BERTH-ROUTER-POSTRTG",
            hook: "POSTROUTING",
            rules: vec![
                r(&["-s", &n, "-d", &n, "-j", "RETURN"]),
                r(&["-s", &n, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"]),
            ],
        },
        Chain {
            table: "filter",
            name: "BERTH-ROUTER-FWD",
            hook: "FORWARD",
            rules: vec![r(&["-s", &n, "-j", "ACCEPT"]), r(&["-d", &n, "-j", "ACCEPT"])],
        },
    ]
}

/// What failed setting up NAT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// An iptables command failed.
    #[error("iptables {args}: {message}")]
    Iptables {
        /// Its arguments.
        args: String,
        /// Its stderr or the spawn error.
        message: String,
    },
}

/// Sets up the router's NAT and forwarding rules.
pub trait Nat {
    /// Makes the chains of [`chains`] exist, hold exactly their rules, and
    /// be jumped to.
    fn ensure(&self, network: Ipv4Net) -> impl Future<Output = Result<(), NatError>> + Send;
}

/// The real one: runs `/usr/sbin/iptables -w`.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// The program (`iptables`).
    pub program: String,
}

impl Default for Iptables {
    fn default() -> Iptables {
        Iptables { program: "/usr/sbin/iptables".into() }
    }
}

impl Iptables {
    async fn run(&self, args: &[&str]) -> Result<String, NatError> {
        let out = tokio::process::Command::new(&self.program).arg("-w").args(args).output().await.map_err(|e| {
            NatError::Iptables { args: args.join(" "), message: format!("running {}: {e}", self.program) }
        })?;
        if !out.status.success() {
            return Err(NatError::Iptables {
                args: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn normalize(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Nat for Iptables {
    async fn ensure(&self, network: Ipv4Net) -> Result<(), NatError> {
        for c in chains(network) {
            let listed = match self.run(&["-t", c.table, "-S", c.name]).await {
                Ok(text) => text,
                Err(_) => {
                    self.run(&["-t", c.table, "-N", c.name]).await?;
                    String::new()
                }
            };
            let have: Vec<String> = listed.lines().filter(|l| l.starts_with("-A ")).map(normalize).collect();
            let want: Vec<String> =
                c.rules.iter().map(|r| normalize(&format!("-A {} {}", c.name, r.join(" ")))).collect();
            if have != want {
                self.run(&["-t", c.table, "-F", c.name]).await?;
                for rule in &c.rules {
                    let mut args = vec!["-t", c.table, "-A", c.name];
                    args.extend(rule.iter().map(String::as_str));
                    self.run(&args).await?;
                }
            }
            if self.run(&["-t", c.table, "-C", c.hook, "-j", c.name]).await.is_err() {
                self.run(&["-t", c.table, "-I", c.hook, "1", "-j", c.name]).await?;
            }
        }
        Ok(())
    }
}

/// A [`Nat`] for tests: remembers the networks it was asked for.
#[derive(Debug, Clone, Default)]
pub struct FakeNat {
    /// Every network `ensure` was called with.
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<Ipv4Net>>>,
}

impl Nat for FakeNat {
    async fn ensure(&self, network: Ipv4Net) -> Result<(), NatError> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(network);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_like_rules() {
        let c = chains("10.244.0.0/16".parse().unwrap());
        assert_eq!(c[0].table, "nat");
        assert_eq!(c[0].rules[1].join(" "), "-s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE");
        assert_eq!(c[0].rules[0].join(" "), "-s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN");
        assert_eq!(c[1].hook, "FORWARD");
    }
}
