//! A running (or stopped) QEMU VM.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_layout::console::READY_PREFIX;

use crate::config::VmConfig;
use crate::console::{self, BootTimes, Failure};
use crate::disk::{self, Image, ImageFormat};
use crate::error::{io, Error, Result};
use crate::host::Host;
use crate::qmp::Qmp;
use crate::shell::AdminShell;
use crate::vm_paths::VmPaths;
use crate::workdir::WorkDir;

mod guest;

/// The default time limit of [`Vm::sh`].
pub const SH_TIMEOUT: Duration = Duration::from_secs(120);

/// efivarfs' file of the SecureBoot variable (EFI_GLOBAL_VARIABLE, GUID
/// 8be4df61-93ca-11d2-aa0d-00e098032b8c; UEFI 2.10, 3.3 "Globally Defined
/// Variables").
pub const SECURE_BOOT_VAR: &str = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// A VM: QEMU on a copy-on-write overlay of the base image, with its own
/// EFI variables. Dropping it kills QEMU if it still runs.
pub struct Vm {
    cfg: VmConfig,
    host: Host,
    paths: VmPaths,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    qmp: Option<Qmp>,
    shell: Option<AdminShell>,
    /// Ready lines already returned by [`Vm::wait_ready`].
    ready_seen: usize,
    /// Last, so it is removed after everything using files in it is gone.
    dir: WorkDir,
}

impl Vm {
    /// Prepares the working directory (overlay, grown to
    /// [`VmConfig::disk_size`]; a private copy of the EFI variables) and
    /// starts QEMU. Fails, naming what to install or build, when QEMU,
    /// OVMF or the image are missing.
    pub fn start(cfg: VmConfig) -> Result<Vm> {
        let host = Host::check()?;
        let base = match &cfg.disk {
            Some(p) if p.is_file() => Some(p.canonicalize().map_err(io(format!("resolving {}", p.display())))?),
            Some(p) => return Err(Error::NoImage(p.clone())),
            None => None,
        };
        let dir = match &cfg.work_dir {
            Some(d) => WorkDir::existing(d)?,
            None => WorkDir::create(&cfg.name)?,
        };
        let paths = VmPaths::in_dir(dir.path());
        for sock in [&paths.admin_sock, &paths.qmp_sock] {
            // sockaddr_un holds 108 bytes.
            if sock.as_os_str().len() > 100 {
                return Err(Error::Other(format!(
                    "the socket path {} is too long for a unix socket: set BERTH_VM_DIR to a shorter directory",
                    sock.display()
                )));
            }
        }
        if cfg.uses_ovmf() && !paths.vars.exists() {
            let vars = cfg.firmware(&host).1;
            std::fs::copy(vars, &paths.vars).map_err(io(format!("copying {}", vars.display())))?;
        }
        if let Some(base) = &base {
            if !paths.overlay.exists() {
                let format = ImageFormat::detect(base)?;
                disk::run_tool(
                    Command::new(&host.qemu_img)
                        .args(["create", "-q", "-f", "qcow2", "-F", format.as_str(), "-b"])
                        .arg(base)
                        .arg(&paths.overlay),
                )?;
            }
            if let Some(size) = cfg.disk_size {
                let current = Image::open(&paths.overlay)?.virtual_size;
                if size > current {
                    disk::run_tool(
                        Command::new(&host.qemu_img).args(["resize", "-q"]).arg(&paths.overlay).arg(size.to_string()),
                    )?;
                } else if size < current {
                    return Err(Error::Other(format!(
                        "disk_size {size} is smaller than the disk ({current} bytes): disks only grow"
                    )));
                }
            }
        }
        let mut vm = Vm { cfg, host, paths, dir, child: None, exited: None, qmp: None, shell: None, ready_seen: 0 };
        vm.launch()?;
        Ok(vm)
    }

    fn with_disk(&self) -> bool {
        self.cfg.disk.is_some()
    }

    fn launch(&mut self) -> Result<()> {
        for sock in [&self.paths.admin_sock, &self.paths.qmp_sock] {
            let _ = std::fs::remove_file(sock);
        }
        let args = self.cfg.qemu_args(&self.host, &self.paths, self.with_disk());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.qemu_log)
            .map_err(io(format!("opening {}", self.paths.qemu_log.display())))?;
        let mut cmd = Command::new(&self.host.qemu);
        cmd.args(&args).current_dir(&self.paths.dir);
        if self.cfg.serial_to_stdio {
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            let out = log.try_clone().map_err(io("duplicating the log file handle"))?;
            cmd.stdin(Stdio::null()).stdout(out);
        }
        cmd.stderr(log);
        let child = cmd.spawn().map_err(io(format!("starting {}", self.host.qemu.display())))?;
        self.child = Some(child);
        self.exited = None;
        self.qmp = None;
        self.shell = None;
        // QEMU creates the QMP socket before it runs the guest: connecting
        // proves it accepted its command line.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.poll_exit() {
                return Err(Error::Exited {
                    what: "QEMU to start".into(),
                    status: st.to_string(),
                    context: self.paths.context(),
                });
            }
            if self.paths.qmp_sock.exists() {
                if let Ok(q) = Qmp::connect(&self.paths.qmp_sock) {
                    self.qmp = Some(q);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "QEMU's QMP socket".into(),
                    after: Duration::from_secs(30),
                    context: self.paths.context(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts QEMU again on the same overlay and EFI variables (a power
    /// cycle), after it exited. The console log goes on where it was, and
    /// [`Vm::wait_ready`] waits for the next boot's ready line.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(Error::Other(
                "restart: QEMU still runs; stop it first (powerdown + wait_exit, quit or power_cut)".into(),
            ));
        }
        self.launch()
    }

    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    pub fn paths(&self) -> &VmPaths {
        &self.paths
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The VM's disk (qcow2 overlay).
    pub fn overlay(&self) -> &Path {
        &self.paths.overlay
    }

    /// Keep the working directory when this is dropped.
    pub fn keep_dir(&mut self) {
        self.dir.keep();
    }

    /// QEMU's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        match (&self.child, &self.exited) {
            (Some(c), None) => Some(c.id()),
            _ => None,
        }
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        poll_child(&mut self.child, &mut self.exited)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.poll_exit().is_none()
    }

    // ---- console -------------------------------------------------------

    /// Everything the serial console printed so far.
    pub fn console_text(&self) -> String {
        self.paths.console_text()
    }

    /// Waits until `check` finds what it wants in the console text. Fails
    /// when QEMU exits first or time runs out.
    fn wait_console<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&str, &VmPaths) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            // The exit status first: once QEMU is gone, the text is final.
            let exited = self.poll_exit();
            let text = self.console_text();
            if let Some(v) = check(&text, &self.paths)? {
                return Ok(v);
            }
            if let Some(st) = exited {
                return Err(Error::Exited { what: what.into(), status: st.to_string(), context: self.paths.context() });
            }
            if self.child.is_none() {
                return Err(Error::Other(format!("{what}: QEMU was never started")));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout { what: what.into(), after: timeout, context: self.paths.context() });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first console line containing `pattern`.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for_nth(pattern, 1, timeout)
    }

    /// The `n`th (1-based) console line containing `pattern`, counting from
    /// the start of the log (all boots of this VM).
    pub fn wait_for_nth(&mut self, pattern: &str, n: usize, timeout: Duration) -> Result<String> {
        let what = if n == 1 {
            format!("a console line with {pattern:?}")
        } else {
            format!("console line number {n} with {pattern:?}")
        };
        self.wait_nth_line(&what, n, timeout, |l| l.contains(pattern))
    }

    /// The first console line for which `matches` holds.
    pub fn wait_line(&mut self, what: &str, timeout: Duration, matches: impl FnMut(&str) -> bool) -> Result<String> {
        self.wait_nth_line(what, 1, timeout, matches)
    }

    /// The `n`th (1-based) console line for which `matches` holds, counting
    /// from the start of the log.
    pub fn wait_nth_line(
        &mut self,
        what: &str,
        n: usize,
        timeout: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        self.wait_console(what, timeout, |text, _| {
            Ok(console::nth_line(text, n, &mut matches).map(|(_, l)| l.to_string()))
        })
    }

    /// Waits for the next boot's ready line (the first one not yet returned
    /// by this method) and parses it. Fails at once when PID1 reports an
    /// emergency, the kernel panics or QEMU exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<BootTimes> {
        let n = self.ready_seen + 1;
        let what =
            if n == 1 { "the ready line".to_string() } else { format!("ready line number {n} (boot {n} of this VM)") };
        let w = what.clone();
        let line = self.wait_console(&what, timeout, |text, paths| {
            if let Some((_, line)) = console::nth_line(text, n, console::is_ready_line) {
                return Ok(Some(line.to_string()));
            }
            let from = console::nth_line(text, n - 1, console::is_ready_line).map(|(end, _)| end).unwrap_or(0);
            match console::failure_after(text, from) {
                Some(Failure::Emergency(l)) => {
                    Err(Error::Emergency { what: w.clone(), line: l.to_string(), context: paths.context() })
                }
                Some(Failure::Panic(l)) => {
                    Err(Error::KernelPanic { what: w.clone(), line: l.to_string(), context: paths.context() })
                }
                None => Ok(None),
            }
        })?;
        self.ready_seen = n;
        BootTimes::parse(&line)
    }

    /// Waits for the next boot's ready line like [`Vm::wait_ready`], but
    /// through boots that fail on the way (a kernel panic, a verity error,
    /// an emergency) and reset by themselves: for a machine that is
    /// expected to spend boot tries and fall back. Fails only when QEMU
    /// exits or time runs out.
    pub fn wait_ready_through_failures(&mut self, timeout: Duration) -> Result<BootTimes> {
        let n = self.ready_seen + 1;
        let what = format!("ready line number {n}, through failing boots");
        let line = self.wait_console(&what, timeout, |text, _| {
            Ok(console::nth_line(text, n, console::is_ready_line).map(|(_, line)| line.to_string()))
        })?;
        self.ready_seen = n;
        BootTimes::parse(&line)
    }

    /// Counts every ready line on the console so far as seen, so the next
    /// [`Vm::wait_ready`] waits for a boot that has not come up yet (after
    /// boots the test let pass without waiting for each).
    pub fn skip_ready_lines(&mut self) {
        self.ready_seen = self.ready_count();
    }

    /// How many ready lines the console shows (boots that came up).
    pub fn ready_count(&self) -> usize {
        console::count_lines(&self.console_text(), READY_PREFIX)
    }

    // ---- QMP -----------------------------------------------------------

    /// The QMP connection (made when QEMU started).
    pub fn qmp(&mut self) -> Result<&mut Qmp> {
        if !self.is_running() {
            return Err(Error::Qmp("QEMU is not running".into()));
        }
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.paths.qmp_sock)?);
        }
        Ok(self.qmp.as_mut().expect("connected above"))
    }

    /// Presses the ACPI power button (`system_powerdown`). Returns at once;
    /// follow with [`Vm::wait_exit`].
    pub fn powerdown(&mut self) -> Result<()> {
        self.qmp()?.execute("system_powerdown", None).map(drop)
    }

    /// A hard reset of the machine (`system_reset`), no guest shutdown.
    pub fn reset(&mut self) -> Result<()> {
        self.qmp()?.execute("system_reset", None).map(drop)
    }

    /// QEMU's run state (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String> {
        let r = self.qmp()?.execute("query-status", None)?;
        r.get("status")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Qmp(format!("query-status returned {r}")))
    }

    /// Ends QEMU through QMP `quit` (no guest shutdown; QEMU itself closes
    /// its disk cleanly) and waits for it to exit.
    pub fn quit(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.exited {
            return Ok(st);
        }
        match self.qmp()?.execute("quit", None) {
            Ok(_) | Err(Error::Qmp(_)) => {}
            Err(e) => return Err(e),
        }
        self.qmp = None;
        self.wait_exit(Duration::from_secs(30))
    }

    /// Pulls the plug: SIGKILL to QEMU. Nothing is flushed: neither the
    /// guest's caches nor QEMU's.
    pub fn power_cut(&mut self) -> Result<()> {
        if let (Some(child), None) = (&mut self.child, self.exited) {
            let _ = child.kill();
            let st = child.wait().map_err(io("waiting for QEMU"))?;
            self.exited = Some(st);
        }
        self.qmp = None;
        self.shell = None;
        Ok(())
    }

    /// Waits until QEMU exits (the guest powered off, or rebooted under
    /// `no_reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.poll_exit() {
                self.qmp = None;
                self.shell = None;
                return Ok(st);
            }
            if self.child.is_none() {
                return Err(Error::Other("QEMU was never started".into()));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "QEMU to exit".into(),
                    after: timeout,
                    context: self.paths.context(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for QEMU to exit, however long it takes (`berth-image run`).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.exited {
            return Ok(st);
        }
        let child = self.child.as_mut().ok_or_else(|| Error::Other("QEMU was never started".into()))?;
        let st = child.wait().map_err(io("waiting for QEMU"))?;
        self.exited = Some(st);
        Ok(st)
    }

    // ---- disk ----------------------------------------------------------

    /// The VM's disk for host-side checks; QEMU must have exited.
    pub fn image(&mut self) -> Result<Image> {
        if self.is_running() {
            return Err(Error::Other("the disk can be read only after QEMU exited".into()));
        }
        Image::open(&self.paths.overlay)
    }
}

fn poll_child(child: &mut Option<Child>, exited: &mut Option<ExitStatus>) -> Option<ExitStatus> {
    if exited.is_none() {
        if let Some(c) = child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                *exited = Some(st);
            }
        }
    }
    *exited
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.is_running() {
            if self.cfg.serial_to_stdio {
                // Let QEMU put the terminal back in order.
                if let Some(q) = self.qmp.as_mut() {
                    let _ = q.execute("quit", None);
                    let _ = self.wait_exit(Duration::from_secs(5));
                }
            }
            if let (Some(c), None) = (&mut self.child, self.exited) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("berth-qemu: VM {:?}: console log {}", self.cfg.name, self.paths.console.display());
        }
    }
}
