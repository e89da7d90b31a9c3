//! What the benchmarks in `tests/benches/` share: figures over several runs and the
//! Rust-against-JS table, the machine description, and control of the VM's memory state
//! (see [`Mem`]).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Statistics

/// The median of `v` (the mean of the middle two for an even count; NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank `p`th percentile of `v` (the smallest value with at least `p`% of the
/// values at or below it; NaN if empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

// ---------------------------------------------------------------------------------------
// Figures and the table

/// One side's measurements of one workload.
#[derive(Clone, Debug)]
pub struct Figure {
    /// One value per run.
    pub runs: Vec<f64>,
    /// `blocks/s`, `MB/s`, `us`, `ms`, `s`, `s/GiB`, ...
    pub unit: &'static str,
}

impl Figure {
    /// No runs yet.
    pub fn new(unit: &'static str) -> Self {
        Figure {
            runs: Vec::new(),
            unit,
        }
    }

    /// The median over the runs.
    pub fn median(&self) -> f64 {
        median(&self.runs)
    }

    /// The median with its unit, for the table.
    pub fn show(&self) -> String {
        let v = self.median();
        match self.unit {
            "blocks/s" => format!("{:.3} M blk/s", v / 1e6),
            "MB/s" => format!("{v:.0} MB/s"),
            "us" => format!("{v:.2} us"),
            "s/GiB" => format!("{v:.2} s/GiB"),
            "files/s" | "reads/s" => format!("{v:.0} {}", self.unit),
            "MiB" => format!("{v:.1} MiB"),
            u => format!("{v:.3} {u}"),
        }
    }

    /// `{ median, runs, unit }`.
    pub fn json(&self) -> Value {
        json!({ "median": self.median(), "runs": self.runs, "unit": self.unit })
    }
}

/// A row of the table: Rust against JS (or against a baseline).
pub struct Row {
    /// Short id (`A-warm`, `C`, ...).
    pub id: String,
    /// What the row measures.
    pub label: String,
    /// The Rust figure.
    pub rust: Figure,
    /// What it is compared with (`JS`, a baseline), if anything.
    pub other: Option<(&'static str, Figure)>,
    /// How many times better Rust is (for latencies and costs: other / Rust).
    pub ratio: Option<f64>,
    /// Minimum ratio required, and how to print it (`None`: informational; the ratio is
    /// still shown when there is something to compare with).
    pub target: Option<(f64, &'static str)>,
    /// Print the ratio as a percentage.
    pub percent: bool,
}

impl Row {
    /// Rust against `other`, higher is better (throughputs), or Rust alone when `other`
    /// has no runs.
    pub fn new(
        id: impl Into<String>,
        label: impl Into<String>,
        rust: Figure,
        other: (&'static str, Figure),
        target: Option<(f64, &'static str)>,
    ) -> Row {
        let has_other = !other.1.runs.is_empty();
        Row {
            id: id.into(),
            label: label.into(),
            ratio: has_other.then(|| rust.median() / other.1.median()),
            rust,
            other: has_other.then_some(other),
            target,
            percent: false,
        }
    }

    /// Rust against `other`, lower is better (latencies, costs): the ratio is
    /// other / Rust.
    pub fn lower_is_better(
        id: impl Into<String>,
        label: impl Into<String>,
        rust: Figure,
        other: (&'static str, Figure),
        target: Option<(f64, &'static str)>,
    ) -> Row {
        let mut row = Row::new(id, label, rust, other, target);
        row.ratio = row.ratio.map(|r| 1.0 / r);
        row
    }

    /// Prints the ratio as a percentage.
    pub fn as_percent(mut self) -> Row {
        self.percent = true;
        self
    }

    /// Whether the target is met (`None`: no target, or nothing to compare with).
    pub fn pass(&self) -> Option<bool> {
        match (self.ratio, &self.target) {
            (Some(r), Some((t, _))) => Some(r >= *t),
            _ => None,
        }
    }

    fn ratio_text(&self) -> String {
        match self.ratio {
            Some(r) if self.percent => format!("{:.0}%", r * 100.0),
            Some(r) => format!("{r:.2}x"),
            None => "-".into(),
        }
    }

    /// The row for `--json`.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "rust": self.rust.json(),
            "other": self.other.as_ref().map(|(who, f)| json!({ "who": who, "figure": f.json() })),
            "ratio": self.ratio,
            "target": self.target.as_ref().map(|(t, _)| *t),
            "pass": self.pass(),
        })
    }
}

/// The table: workload, Rust, the other side (headed `other`), ratio, target, PASS/MISS.
pub fn table(rows: &[Row], other: &str) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let w = rows.iter().map(|r| r.label.len()).max().unwrap_or(10);
    let _ = writeln!(
        s,
        "{:<w$}  {:>15}  {:>15}  {:>7}  {:>10}  result",
        "workload", "Rust", other, "ratio", "target"
    );
    let _ = writeln!(
        s,
        "{}",
        "-".repeat(w + 2 + 15 + 2 + 15 + 2 + 7 + 2 + 10 + 8)
    );
    for r in rows {
        let other = r
            .other
            .as_ref()
            .map_or_else(|| "-".into(), |(_, f)| f.show());
        let target = r.target.as_ref().map_or("info", |(_, t)| t);
        let result = match r.pass() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        let _ = writeln!(
            s,
            "{:<w$}  {:>15}  {:>15}  {:>7}  {:>10}  {result}",
            r.label,
            r.rust.show(),
            other,
            r.ratio_text(),
            target,
        );
    }
    s
}

/// A progress line on stderr.
/// Warns on stderr when the `hyperd` or `hyperctl` a benchmark runs is over an hour older
/// than the benchmark itself: most likely a stale build.
pub fn warn_if_binaries_stale() -> Result<()> {
    let bench = std::env::current_exe()?.metadata()?.modified()?;
    for name in ["hyperd", "hyperctl"] {
        let path = crate::daemon::bin(name)?;
        if path.metadata()?.modified()? < bench - Duration::from_secs(3600) {
            eprintln!(
                "warning: {} is over an hour older than this benchmark; run `cargo build --release --bins`",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn progress(msg: &str) {
    eprintln!("  .. {msg}");
}

// ---------------------------------------------------------------------------------------
// Machine

/// What the table's header says about the machine.
pub struct Machine {
    /// Load averages when the bench started.
    pub load_start: String,
    /// CPU model.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Whether the CPU has AVX2.
    pub avx2: bool,
    /// Total RAM.
    pub memory: String,
    /// `node --version`.
    pub node: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// The machine this runs on.
    pub fn get() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(
                || "?".into(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        Machine {
            load_start: loadavg(),
            cpu: field("model name").unwrap_or_else(|| "?".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            avx2: field("flags").is_some_and(|f| f.split_whitespace().any(|x| x == "avx2")),
            memory,
            node,
            kernel,
        }
    }

    /// One line: CPU, cores, AVX2, RAM, kernel, node.
    pub fn line(&self) -> String {
        format!(
            "machine: {}, {} cores, AVX2 {}, {} RAM, Linux {}, node {}",
            self.cpu,
            self.cores,
            if self.avx2 { "yes" } else { "no" },
            self.memory,
            self.kernel,
            self.node
        )
    }

    /// For `--json`, with the load average now as `load_end`.
    pub fn json(&self) -> Value {
        json!({
            "cpu": self.cpu, "cores": self.cores, "avx2": self.avx2, "memory": self.memory,
            "kernel": self.kernel, "node": self.node,
            "load_start": self.load_start, "load_end": loadavg(),
        })
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// Memory state

/// How long freed memory must sit before the host has reclaimed it (the kernel reports
/// free pages after 2 s).
pub const SETTLE: Duration = Duration::from_secs(4);

/// The memory state a timed run starts in.
///
/// Writing new data costs the kernel handing out fresh page-cache pages. On a VM whose
/// host reclaims the guest's free memory (on the Firecracker VM these benchmarks were
/// written on, most likely virtio-balloon free page reporting: the ~2 s delay matches), a
/// page that has been free for a couple of seconds faults in the *host* on first touch,
/// and writing new data then runs at a few hundred MB/s instead of several GB/s, whatever
/// the program. (Measured there with `dd` of 256 MiB: 0.05-0.07 s right after deleting a
/// file, 0.45-1.4 s when the freed memory had sat for 2 s or more, nearly all of it
/// system CPU time.) Left alone, each run lands in whichever state the previous run left
/// behind, so timed runs start in one of two controlled states, the same for both sides:
///
/// * warm: the pages the run allocates were in use a moment ago ([`Ballast`]);
/// * cold: nothing was freed for [`SETTLE`], so every new page is cold.
///
/// On bare metal both states give the same figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    /// Memory freed just before (or while) the run allocates it.
    Warm,
    /// Nothing freed for [`SETTLE`].
    Cold,
}

impl Mem {
    /// The targets are judged in the warm state; cold figures are reported for information
    /// (they measure the host as much as the program).
    pub fn target(self, min: f64, text: &'static str) -> Option<(f64, &'static str)> {
        (self == Mem::Warm).then_some((min, text))
    }

    /// `warm` or `cold`.
    pub fn name(self) -> &'static str {
        match self {
            Mem::Warm => "warm",
            Mem::Cold => "cold",
        }
    }
}

/// Page-cache memory freed right before (or during) a warm run: a file that is written and
/// then deleted or truncated. (Freeing anonymous memory instead is not enough: the kernel
/// hands out page-cache folios from its high-order free lists, where scattered 4 KiB pages
/// do not go back reliably, while a deleted file's folios do.)
pub struct Ballast {
    path: PathBuf,
    armed: bool,
}

impl Ballast {
    /// A ballast file in `dir` (not written yet).
    pub fn new(dir: &Path) -> Self {
        Ballast {
            path: dir.join("ballast"),
            armed: false,
        }
    }

    /// Gets `bytes` of page cache ready for a warm run (nothing for a cold one).
    pub fn arm(&mut self, mem: Mem, bytes: u64) -> Result<()> {
        if mem == Mem::Warm && !self.armed {
            let chunk = vec![1u8; 1 << 20];
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            for i in 0..bytes.div_ceil(chunk.len() as u64) {
                file.write_all_at(&chunk, i * chunk.len() as u64)?;
            }
            self.armed = true;
        }
        Ok(())
    }

    /// Puts the machine in `mem` state: frees the whole ballast, or waits for freed memory
    /// to go back to the host.
    pub fn fire(&mut self, mem: Mem) {
        match mem {
            Mem::Warm => {
                let _ = std::fs::remove_file(&self.path);
                self.armed = false;
            }
            Mem::Cold => std::thread::sleep(SETTLE),
        }
    }

    /// Like [`fire`](Self::fire), for a run that may outlast the 2 s after which freed
    /// memory goes back to the host: warm frees `first` bytes of the ballast now, then
    /// `step` bytes every `every` until the returned guard is dropped (which deletes what
    /// is left) or the ballast is used up. So whenever the run allocates, memory freed less
    /// than `every` ago is there, as long as `step / every` exceeds its allocation rate and
    /// the ballast lasts. Cold waits [`SETTLE`] and returns a guard that does nothing.
    pub fn drip(&mut self, mem: Mem, first: u64, step: u64, every: Duration) -> Result<Drip> {
        if mem == Mem::Cold {
            std::thread::sleep(SETTLE);
            return Ok(Drip::default());
        }
        self.armed = false;
        let file = OpenOptions::new().write(true).open(&self.path)?;
        let mut left = file.metadata()?.len().saturating_sub(first);
        file.set_len(left)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    left = left.saturating_sub(step);
                    if file.set_len(left).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Drip {
            stop,
            thread: Some(thread),
            path: Some(self.path.clone()),
        })
    }
}

/// A [`Ballast::drip`] under way; dropping it stops it and deletes what is left.
#[derive(Default)]
pub struct Drip {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: Option<PathBuf>,
}

impl Drop for Drip {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}
