//! `berth-image soak --power-cuts N`: the power-cut test of the QEMU suite,
//! run long. Releases N and N+1 are built from this tree; a machine on N
//! installs N+1 from an HTTP server on the host and loses its power at a
//! point chosen at random, N times; after each cut it must come up ready
//! on its old slot, blessed, with no boot entry for the half-written one,
//! within the boot timeout, or the cut counts as a brick. Not in CI: one
//! cut takes minutes under TCG. Figures printed, nothing asserted but the
//! outcome of each cut.
//!
//! The points: those of [`CUT_POINTS`] (the one inside the root stream at
//! a random percentage, 1-99, rather than always half way), and
//! `first-boot`: N+1 installed in full, then the power cut early in its
//! first boot (0-3 s after PID1 armed the watchdog, before any bless);
//! that boot must still come up as N+1, blessed, since one cut spends one
//! of three tries. Every 10 cuts and at the end, N+1 is installed in full,
//! booted and blessed, then rolled back to N (`berthctl update rollback`
//! and a reboot: the machine goes on from N with the same disk, /var
//! and history, as a user's would, rather than from a fresh copy of N's
//! disk). After a brick or a failed step the soak reports it, keeps that
//! VM's directory and goes on from a fresh copy of N's disk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_qemu::http::StaticServer;
use berth_qemu::updates::{install_paused, CUT_POINTS};
use berth_qemu::{boot_timeout, workspace_root, VmConfig, GIB};

use crate::rig::{come_up, Machine, Rig};

type Error = Box<dyn std::error::Error>;

/// The point of a cut early in N+1's first boot.
pub const FIRST_BOOT: &str = "first-boot";

/// What PID1 prints once it armed the watchdog, early in every boot.
const WATCHDOG_ARMED: &str = ") armed, timeout ";

pub struct SoakOptions {
    pub cuts: usize,
    /// Seeds the choice of points (default: the clock); printed first so
    /// a run can be repeated.
    pub seed: Option<u64>,
    pub kvm: bool,
}

/// xorshift64*: enough to pick cut points; no dependency for it.
pub struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64, so near seeds start far apart (and the
    /// state is never 0).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A cut point: one of [`CUT_POINTS`] or [`FIRST_BOOT`], each as likely;
/// `write-root@50` becomes `write-root@P` with P in 1..=99.
pub fn pick(rng: &mut Rng) -> String {
    let i = rng.below(CUT_POINTS.len() as u64 + 1) as usize;
    match CUT_POINTS.get(i) {
        None => FIRST_BOOT.to_string(),
        Some(p) => match p.split_once('@') {
            Some((step, _)) => format!("{step}@{}", 1 + rng.below(99)),
            None => p.to_string(),
        },
    }
}

/// What one cut came to.
pub enum Outcome {
    /// Came up as expected.
    Ok,
    /// Did not come up as expected within the boot timeout.
    Brick(String),
    /// A step around the cut failed (an install that did not pause or did
    /// not succeed, a rollback): not a brick, but not right either.
    Failed(String),
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Brick(_) => "BRICK",
            Outcome::Failed(_) => "FAILED",
        }
    }
}

/// Cuts per point and bricks among them, by step (`write-root@P` counts
/// under `write-root`).
#[derive(Default)]
pub struct Tally(BTreeMap<String, (usize, usize)>);

impl Tally {
    pub fn add(&mut self, point: &str, brick: bool) {
        let step = point.split('@').next().unwrap_or(point).to_string();
        let e = self.0.entry(step).or_default();
        e.0 += 1;
        e.1 += usize::from(brick);
    }
}

impl std::fmt::Display for Tally {
    /// `write-uki 0/3, write-root 1/4`: bricks / cuts per point.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(p, (cuts, bricks))| format!("{p} {bricks}/{cuts}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}

pub fn soak(opts: &SoakOptions) -> Result<(), Error> {
    crate::deps::ensure()?;
    if opts.cuts == 0 {
        return Err("--power-cuts must be at least 1".into());
    }
    let seed = opts
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    println!("soak: {} power cuts, seed {seed}", opts.cuts);
    let root = workspace_root().join("target").join("berth-soak");
    let rig = Rig::build(&root)?;
    let www = root.join("www");
    rig.www(&www)?;
    let server = StaticServer::start(&www)?;
    let url = server.guest_url(&rig.n1_bundle_name());
    let (n, n1) = (rig.n.version.as_str(), rig.n1.version.as_str());
    println!("soak: N = {n}, N+1 = {n1} from {url}");

    let mut rng = Rng::new(seed);
    let mut machines = 0;
    let mut fresh = || -> Result<Machine, Error> {
        machines += 1;
        // etcd preallocates a 64 MB WAL: the data partition grows to the
        // end of a 4 GiB disk (the image's own leaves it 32 MiB).
        let cfg = VmConfig::new().name(&format!("soak{machines}")).disk(&rig.n.qcow2).disk_size(4 * GIB).kvm(opts.kvm);
        Machine::start(cfg, n)
    };
    let mut m = fresh()?;
    let (mut tally, mut bricks, mut failures) = (Tally::default(), 0usize, Vec::new());
    for i in 1..=opts.cuts {
        let point = pick(&mut rng);
        let t = Instant::now();
        let outcome = if point == FIRST_BOOT {
            cut_first_boot(&mut m, &url, n, n1, &mut rng)?
        } else {
            cut_install(&mut m, &url, &point, n)?
        };
        tally.add(&point, matches!(outcome, Outcome::Brick(_)));
        println!("cut {i}/{}: {point:<16} {:<6} {:>5.0} s", opts.cuts, outcome.word(), t.elapsed().as_secs_f64());
        let bad = match outcome {
            Outcome::Ok => None,
            Outcome::Brick(why) => {
                bricks += 1;
                Some(why)
            }
            Outcome::Failed(why) => {
                failures.push(format!("cut {i} ({point})"));
                Some(why)
            }
        };
        if let Some(why) = bad {
            m = start_over(m, &why, &mut fresh)?;
        }
        if i % 10 == 0 || i == opts.cuts {
            let t = Instant::now();
            match m.round_trip(&url, n, n1) {
                Ok(_) => println!(
                    "check after cut {i}: install {n1}, boot it, blessed, roll back to {n}: ok {:>5.0} s",
                    t.elapsed().as_secs_f64()
                ),
                Err(why) => {
                    println!("check after cut {i}: install {n1}, boot it, blessed, roll back to {n}: FAILED");
                    failures.push(format!("check after cut {i}"));
                    m = start_over(m, &why, &mut fresh)?;
                }
            }
        }
    }
    drop(m);
    println!("soak: {bricks} bricks in {} power cuts (points: {tally})", opts.cuts);
    if !failures.is_empty() {
        println!("soak: {} failed steps (not bricks): {}", failures.len(), failures.join(", "));
    }
    if bricks > 0 || !failures.is_empty() {
        return Err(format!("{bricks} bricks, {} failed steps (seed {seed})", failures.len()).into());
    }
    Ok(())
}

/// Reports `why`, keeps the VM's directory for a look and starts a fresh
/// machine on N.
fn start_over(mut m: Machine, why: &str, fresh: &mut dyn FnMut() -> Result<Machine, Error>) -> Result<Machine, Error> {
    m.vm.keep_dir();
    eprintln!("{}", indent(why));
    eprintln!("  (VM kept in {}; going on from a fresh copy of N's disk)", m.vm.dir().display());
    drop(m);
    fresh()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  | {l}\n")).collect()
}

/// An install stopped at `point`, the power cut, the machine powered on:
/// N must come up on its slot, blessed, the other slot without an entry.
fn cut_install(m: &mut Machine, url: &str, point: &str, n: &str) -> Result<Outcome, Error> {
    if let Err(e) = install_paused(&mut m.vm, url, point, Duration::from_secs(1200)) {
        return Ok(Outcome::Failed(format!("the install did not pause at {point}: {e}")));
    }
    m.vm.power_cut()?;
    m.vm.restart()?;
    m.vm.skip_ready_lines();
    let home = m.home.clone();
    Ok(match come_up(&mut m.vm, boot_timeout(), Some(&home), n) {
        Err(why) => Outcome::Brick(format!("after a cut at {point}: {why}")),
        Ok(up) if !up.status.other.entry.is_empty() => Outcome::Brick(format!(
            "after a cut at {point}: slot {} has an entry ({}) for a slot the install did not finish:\n{}",
            m.away, up.status.other.entry, up.status.text
        )),
        Ok(_) => Outcome::Ok,
    })
}

/// N+1 installed in full, the reboot, the power cut 0-3 s after N+1's
/// PID1 armed the watchdog: N+1 must still come up, blessed (one try
/// spent of three); then back to N.
fn cut_first_boot(m: &mut Machine, url: &str, n: &str, n1: &str, rng: &mut Rng) -> Result<Outcome, Error> {
    if let Err(why) = m.install(url, n1) {
        return Ok(Outcome::Failed(why));
    }
    let armed = m.vm.console_text().matches(WATCHDOG_ARMED).count();
    berth_qemu::updates::reboot(&mut m.vm)?;
    if let Err(e) = m.vm.wait_for_nth(WATCHDOG_ARMED, armed + 1, boot_timeout()) {
        return Ok(Outcome::Brick(format!("{n1}'s first boot: PID1 did not start: {e}")));
    }
    std::thread::sleep(Duration::from_millis(rng.below(3000)));
    m.vm.power_cut()?;
    m.vm.restart()?;
    m.vm.skip_ready_lines();
    let away = m.away.clone();
    if let Err(why) = come_up(&mut m.vm, boot_timeout(), Some(&away), n1) {
        return Ok(Outcome::Brick(format!("after a cut in {n1}'s first boot: {why}")));
    }
    Ok(match m.roll_back(n) {
        Ok(_) => Outcome::Ok,
        Err(why) => Outcome::Failed(format!("rolling back from {n1} to {n}: {why}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_cover_every_cut_point_and_the_first_boot() {
        let mut rng = Rng::new(7);
        let mut seen = BTreeMap::new();
        for _ in 0..600 {
            let p = pick(&mut rng);
            if let Some(pct) = p.strip_prefix("write-root@") {
                let pct: u32 = pct.parse().unwrap();
                assert!((1..=99).contains(&pct), "{p}");
            }
            *seen.entry(p.split('@').next().unwrap().to_string()).or_insert(0) += 1;
        }
        let mut expected: Vec<String> = CUT_POINTS.iter().map(|p| p.split('@').next().unwrap().to_string()).collect();
        expected.push(FIRST_BOOT.into());
        expected.sort();
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
        assert!(seen.values().all(|&c| c > 50), "each point about 1 in 6: {seen:?}");
        assert_eq!(pick(&mut Rng::new(3)), pick(&mut Rng::new(3)), "a seed repeats its points");
        let firsts: std::collections::BTreeSet<u64> = (0..20).map(|s| Rng::new(s).next_u64()).collect();
        assert_eq!(firsts.len(), 20, "every seed starts elsewhere");
    }

    #[test]
    fn tally_counts_bricks_per_step() {
        let mut t = Tally::default();
        t.add("write-root@12", false);
        t.add("write-root@80", true);
        t.add(FIRST_BOOT, false);
        assert_eq!(t.to_string(), "first-boot 0/1, write-root 1/2");
    }
}
