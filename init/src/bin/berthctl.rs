//! berthctl: the command line over PID1's control API, with systemctl's
//! habits.
//!
//! ```text
//! berthctl [--socket PATH] status [UNIT]     table, user data and etcd's members and health,
//!                                            or one unit + its last 10 log lines
//!                                            (`status router`: + the router's subnet, peers, convergence)
//! berthctl start|stop|restart UNIT
//! berthctl reload                            read the unit files again
//! berthctl logs UNIT [-f] [-n N]             the last N lines (10), -f: then follow;
//!                                            long lines whole (pieces joined)
//! berthctl reboot | poweroff
//! berthctl analyze                           boot blame and critical chain
//! berthctl update status                      slots, versions, counters, bless, failed versions
//! berthctl update install FILE|URL [--force]  into the other slot, with a progress bar
//! berthctl update rollback | check [URL]      boot the other slot next | the newest published
//! berthctl config apply FILE [--try SECONDS]  validate and apply user data (FILE `-`: stdin);
//!                                             --try: reverted unless confirmed in time
//! berthctl config confirm | show              keep the trial | the document in force, its record
//! ```
//!
//! Exit codes: 0 ok; 1 an error (the message on stderr; an invalid document:
//! each error, nothing applied); 3 `status UNIT` of a unit that is not
//! active; 4 `config apply` applied, with problems after it (a unit that did
//! not restart, ...: on stderr); 2 a usage error (clap's).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_init::berthctl::update::{self, UpdateClient};
use berth_init::berthctl::{analyze, render, router, Client, ClientError};
use berth_init::journal::{self, Joiner, Record, Stream, Timestamp};
use berth_layout::paths::{CONTROL_SOCKET, UPDATER_SOCKET};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "berthctl", version, about = "Control Berth's PID1: units, logs, power, boot timeline")]
struct Cli {
    /// The control socket.
    #[arg(long, global = true, default_value = CONTROL_SOCKET)]
    socket: PathBuf,
    /// The updater's socket (`update ...`).
    #[arg(long, global = true, default_value = UPDATER_SOCKET)]
    updater_socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every unit as a table, or one unit in detail with its last log lines.
    Status { unit: Option<String> },
    /// Start a unit.
    Start { unit: String },
    /// Stop a unit.
    Stop { unit: String },
    /// Stop and start a unit.
    Restart { unit: String },
    /// Read the unit files again and apply what changed.
    Reload,
    /// A unit's log (`berth`: PID1's own).
    Logs {
        unit: String,
        /// Keep printing new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to show.
        #[arg(short = 'n', long = "lines", default_value_t = 10)]
        lines: u32,
    },
    /// Stop everything cleanly and reboot.
    Reboot,
    /// Stop everything cleanly and power off.
    Poweroff,
    /// How the boot went: time per unit (blame) and the critical chain.
    Analyze,
    /// A/B updates through berth-updater.
    Update {
        #[command(subcommand)]
        action: UpdateCommand,
    },
    /// User data on a running machine: apply a changed document, keep a
    /// trial, show what is in force.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a document (#cloud-config or #berth-config) and apply it:
    /// prints what changed and the units restarted; an invalid document
    /// prints every error and applies nothing.
    Apply {
        /// The document; `-` reads stdin.
        file: PathBuf,
        /// Revert to the configuration in force now unless `berthctl
        /// config confirm` comes within SECONDS (at most a day).
        #[arg(long = "try", value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=86_400))]
        try_seconds: Option<u32>,
    },
    /// Keep the configuration on trial.
    Confirm,
    /// The document in force: where it came from, its instance-id,
    /// sha256, when it was applied, a trial's end, then the text.
    Show,
}

#[derive(Subcommand, Debug)]
enum UpdateCommand {
    /// Both slots, their versions and boot counters, whether this boot is
    /// blessed, the last install or rollback, the versions that failed here.
    Status,
    /// Install a bundle (a file or an http(s) URL) into the other slot.
    Install {
        source: String,
        /// Allow a downgrade or a version that failed here.
        #[arg(long)]
        force: bool,
    },
    /// Boot the other slot next (if it holds a good version).
    Rollback,
    /// The newest published version (from URL, or the configured source).
    Check { url: Option<String> },
}

/// Log lines `status UNIT` shows.
const STATUS_LOG_LINES: u32 = 10;
/// How long one follow call waits on the server.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// How long `logs -f` holds the start of a line for its end before it
/// prints it as it is (marked `STREAM+`).
const FOLLOW_HOLD: Duration = Duration::from_secs(1);

enum Failure {
    Client(ClientError),
    /// stdout went away (`| head`): not an error.
    Closed,
    Io(io::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Io(e)
        }
    }
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints records as lines, pieces joined.
fn print_records(records: Vec<Record>) -> Result<(), Failure> {
    print(&render::log_lines(&journal::join(records, journal::MAX_JOINED_BYTES)))
}

/// `logs -f`: the backlog, then what comes, pieces joined; the start of a
/// line is held at most [`FOLLOW_HOLD`] for its end, then printed as it
/// is, marked, and what comes after it prints as a line of its own.
async fn follow(client: &Client, unit: &str, lines: u32) -> Result<(), Failure> {
    let mut joiner = Joiner::new(journal::MAX_JOINED_BYTES);
    // The lines held: their stream, the time of their first piece (which
    // tells one line from the next) and since when they are held.
    let mut held: Vec<(Stream, Timestamp, Instant)> = Vec::new();
    let mut records = client.follow(unit, lines).await?;
    loop {
        let mut done = Vec::new();
        for r in records {
            joiner.push(r, &mut done);
        }
        let now = Instant::now();
        held = joiner
            .open()
            .iter()
            .map(|r| {
                let since = held.iter().find(|h| (h.0, h.1) == (r.stream, r.time)).map_or(now, |h| h.2);
                (r.stream, r.time, since)
            })
            .collect();
        for &(stream, _, since) in &held {
            if now >= since + FOLLOW_HOLD {
                done.extend(joiner.take_open_of(stream));
            }
        }
        held.retain(|h| now < h.2 + FOLLOW_HOLD);
        print(&render::log_lines(&done))?;
        let wait = held.iter().map(|h| (h.2 + FOLLOW_HOLD).saturating_duration_since(now)).min();
        records = client.follow_next(wait.unwrap_or(FOLLOW_WAIT)).await?;
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock of the statuses' times.
fn monotonic_us() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
        }
        Err(_) => 0,
    }
}

/// `berthctl update ...`.
async fn run_update(socket: &std::path::Path, action: UpdateCommand) -> Result<u8, Failure> {
    let client = UpdateClient::connect(socket).await?;
    match action {
        UpdateCommand::Status => print(&update::status(&client.status().await?))?,
        UpdateCommand::Rollback => print(&update::rolled_back(&client.rollback().await?))?,
        UpdateCommand::Check { url } => print(&update::candidate(&client.check(url.as_deref().unwrap_or("")).await?))?,
        UpdateCommand::Install { source, force } => {
            // The daemon opens the file: give it a path it can find.
            let source = if source.contains("://") {
                source
            } else {
                std::path::absolute(&source).map(|p| p.display().to_string()).unwrap_or(source)
            };
            let mut bar = update::Bar::new();
            let result = client.install(&source, force, |p| bar.show(&p)).await;
            bar.finish();
            print(&update::installed(&result?))?;
        }
    }
    Ok(0)
}

/// Seconds since the epoch now.
fn now_secs() -> u64 {
    berth_init::provision::epoch_secs(std::time::SystemTime::now())
}

/// Milliseconds since the epoch (the router's status times).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The document `config apply` sends, and its name in errors: the path as
/// given, or `stdin`.
fn read_document(file: &std::path::Path) -> Result<(String, Vec<u8>), Failure> {
    if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        io::stdin().read_to_end(&mut bytes)?;
        return Ok(("stdin".into(), bytes));
    }
    let name = file.display().to_string();
    match std::fs::read(file) {
        Ok(bytes) => Ok((name, bytes)),
        Err(e) => Err(Failure::Io(io::Error::new(e.kind(), format!("{name}: {e}")))),
    }
}

/// `berthctl config ...`.
async fn run_config(client: &Client, action: ConfigCommand) -> Result<u8, Failure> {
    match action {
        ConfigCommand::Apply { file, try_seconds } => {
            let (name, bytes) = read_document(&file)?;
            match client.config_apply(&name, &bytes, try_seconds).await {
                Ok(report) => {
                    print(&render::config_report(&report, now_secs()))?;
                    if !report.problems.is_empty() {
                        let _ = io::stderr().write_all(render::config_problems(&report).as_bytes());
                        return Ok(4);
                    }
                }
                Err(ClientError::Remote { name: kind, message }) if kind == "Invalid" => {
                    let _ = io::stderr().write_all(render::config_invalid(&name, &message).as_bytes());
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
        ConfigCommand::Confirm => {
            client.config_confirm().await?;
            print("confirmed: the configuration on trial stays in force\n")?;
        }
        ConfigCommand::Show => print(&render::in_force(client.config_show().await?.as_ref(), now_secs()))?,
    }
    Ok(0)
}

/// `status`'s etcd section: membership and health through etcdctl, asked
/// at the etcd unit's client URL (see `berth_init::berthctl::etcd`).
async fn etcd_section() -> String {
    use berth_init::berthctl::etcd;
    use berth_layout::paths::{ETC_UNIT_DIR, IMAGE_UNIT_DIR};
    let etc = PathBuf::from(format!("{ETC_UNIT_DIR}/etcd.toml"));
    let image = PathBuf::from(format!("{IMAGE_UNIT_DIR}/etcd.toml"));
    let asked = tokio::task::spawn_blocking(move || {
        etcd::section(&etc, &image, std::path::Path::new(etcd::ETCDCTL), etcd::TIMEOUT)
    });
    asked.await.unwrap_or_else(|e| format!("\netcd: {e}\n"))
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if let Command::Update { action } = cli.command {
        return run_update(&cli.updater_socket, action).await;
    }
    let client = Client::connect(&cli.socket).await?;
    match cli.command {
        Command::Status { unit: None } => {
            let units = client.list().await?;
            print(&render::status_table(&units, monotonic_us()))?;
            // The units matter more: user data that cannot be asked for is
            // said, not fatal.
            match client.provisioning().await {
                Ok(p) => print(&render::provisioning(&p, now_secs()))?,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "berthctl: user data: {e}");
                }
            }
            print(&etcd_section().await)?;
        }
        Command::Status { unit: Some(unit) } => {
            let status = client.status(&unit).await?;
            // The details matter more than the log lines: a log that cannot
            // be read is said, not fatal.
            let (logs, note) = match client.logs(&unit, STATUS_LOG_LINES).await {
                Ok(logs) => (logs, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            print(&render::status_details(&status, monotonic_us(), &logs))?;
            if let Some(e) = note {
                let _ = writeln!(io::stderr(), "berthctl: logs: {e}");
            }
            if unit == "router" {
                // The router's own view: subnet, peers, last convergence.
                match std::fs::read_to_string(berth_layout::paths::ROUTER_STATUS) {
                    Ok(text) => print(&router::section(&text, now_ms()))?,
                    Err(e) => print(&format!("\nRouter: no status ({}: {e})\n", berth_layout::paths::ROUTER_STATUS))?,
                }
            }
            if !render::is_active(status.state) {
                return Ok(3);
            }
        }
        Command::Start { unit } => client.start(&unit).await?,
        Command::Stop { unit } => client.stop(&unit).await?,
        Command::Restart { unit } => client.restart(&unit).await?,
        Command::Reload => {
            let report = client.reload().await?;
            let mut text = String::new();
            for (what, names) in [("added", &report.added), ("removed", &report.removed), ("changed", &report.changed)]
            {
                if !names.is_empty() {
                    text.push_str(&format!("{what}: {}\n", names.join(", ")));
                }
            }
            print(&text)?;
            if !report.errors.is_empty() {
                let mut err = String::new();
                for e in &report.errors {
                    err.push_str(&format!("berthctl: {e}\n"));
                }
                let _ = io::stderr().write_all(err.as_bytes());
                return Ok(1);
            }
        }
        Command::Logs { unit, follow: false, lines } => {
            print_records(client.logs(&unit, lines).await?)?;
        }
        Command::Logs { unit, follow: true, lines } => follow(&client, &unit, lines).await?,
        Command::Reboot => client.reboot().await?,
        Command::Poweroff => client.power_off().await?,
        Command::Analyze => {
            let timeline = client.timeline().await?;
            print(&analyze::report(&timeline))?;
        }
        Command::Config { action } => return run_config(&client, action).await,
        Command::Update { .. } => {}
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(io::stderr(), "berthctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Client(e)) => {
            let _ = writeln!(io::stderr(), "berthctl: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Io(e)) => {
            let _ = writeln!(io::stderr(), "berthctl: {e}");
            ExitCode::from(1)
        }
    }
}
