//! [`FakeDataplane`]: the [`Dataplane`] of the tests, in memory.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::{Dataplane, NetError, Underlay, Vtep, VxlanSpec};
use crate::ipnet::Ipv4Net;
use crate::plan::{Change, KernelState, Mac};

/// An in-memory [`Dataplane`] for tests: one VXLAN device (index 10), its
/// [`KernelState`], and a switch that makes every call fail.
#[derive(Clone)]
pub struct FakeDataplane {
    inner: Arc<Mutex<FakeState>>,
}

/// What a [`FakeDataplane`] holds.
#[derive(Debug, Clone, Default)]
pub struct FakeState {
    /// The underlay it reports.
    pub underlay: Option<Underlay>,
    /// Host networks it reports (overlap check).
    pub host_networks: Vec<(Ipv4Net, String)>,
    /// The VXLAN device as last ensured.
    pub vxlan: Option<VxlanSpec>,
    /// The bridge as last ensured: (name, gateway, prefix length, mtu).
    pub bridge: Option<(String, Ipv4Addr, u8, u32)>,
    /// The routes, neighbours and FDB entries on the VXLAN device.
    pub kernel: KernelState,
    /// Every change applied, in order.
    pub applied: Vec<Change>,
    /// When set, every call fails.
    pub fail: bool,
    /// The VTEP MAC it hands out.
    pub mac: Option<Mac>,
}

impl FakeDataplane {
    /// A data plane with underlay `eth0` (MTU 1500) at `ip` and VTEP MAC `mac`.
    pub fn new(ip: Ipv4Addr, mac: Mac) -> FakeDataplane {
        let state = FakeState {
            underlay: Some(Underlay { name: "eth0".into(), index: 2, mtu: 1500, ip }),
            mac: Some(mac),
            ..FakeState::default()
        };
        FakeDataplane { inner: Arc::new(Mutex::new(state)) }
    }

    /// Reads or changes the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    fn check(&self, what: &str) -> Result<(), NetError> {
        if self.with(|s| s.fail) {
            return Err(NetError::Netlink { what: what.into(), message: "fake failure".into() });
        }
        Ok(())
    }

    /// The routes' destinations, sorted.
    pub fn route_dsts(&self) -> BTreeSet<Ipv4Net> {
        self.with(|s| s.kernel.routes.iter().map(|r| r.dst).collect())
    }
}

impl Dataplane for FakeDataplane {
    async fn underlay(&self, _name: Option<&str>, public_ip: Option<Ipv4Addr>) -> Result<Underlay, NetError> {
        self.check("underlay")?;
        let mut u = self.with(|s| s.underlay.clone()).ok_or_else(|| NetError::NoUnderlay("fake: none".into()))?;
        if let Some(ip) = public_ip {
            u.ip = ip;
        }
        Ok(u)
    }

    async fn host_networks(&self, _skip: &[String]) -> Result<Vec<(Ipv4Net, String)>, NetError> {
        self.check("host networks")?;
        Ok(self.with(|s| s.host_networks.clone()))
    }

    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Vtep, NetError> {
        self.check("ensure vxlan")?;
        Ok(self.with(|s| {
            s.vxlan = Some(spec.clone());
            Vtep { index: 10, mac: s.mac.unwrap_or(Mac([2, 0, 0, 0, 0, 1])) }
        }))
    }

    async fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix_len: u8, mtu: u32) -> Result<(), NetError> {
        self.check("ensure bridge")?;
        self.with(|s| s.bridge = Some((name.to_string(), gateway, prefix_len, mtu)));
        Ok(())
    }

    async fn observe(&self, _index: u32) -> Result<KernelState, NetError> {
        self.check("observe")?;
        Ok(self.with(|s| s.kernel.clone()))
    }

    async fn apply(&self, _index: u32, change: &Change) -> Result<(), NetError> {
        self.check("apply")?;
        self.with(|s| {
            crate::plan::apply(&mut s.kernel, change);
            s.applied.push(*change);
        });
        Ok(())
    }

    async fn enable_forwarding(&self) -> Result<(), NetError> {
        self.check("forwarding")
    }
}
