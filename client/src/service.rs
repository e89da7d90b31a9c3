//! `hyperctl service install|uninstall`: runs hyperd at login as a systemd user service
//! (Linux) or a launchd agent (macOS). The files come from the templates in
//! `packaging/`, with the absolute path of hyperd (and `--home`) filled in.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use hyperd_config::Home;
use serde_json::json;

use crate::connect;
use crate::daemon_cmds::{absolute, find_hyperd};
use crate::output;

/// The systemd user unit template (`packaging/systemd/hyperd.service`).
pub const SYSTEMD_TEMPLATE: &str = include_str!("../../packaging/systemd/hyperd.service");
/// The launchd agent template (`packaging/launchd/org.hyperd.hyperd.plist`).
pub const LAUNCHD_TEMPLATE: &str = include_str!("../../packaging/launchd/org.hyperd.hyperd.plist");
/// The launchd label, also the plist's file name without `.plist`.
pub const LAUNCHD_LABEL: &str = "org.hyperd.hyperd";
/// The systemd unit's name.
pub const SYSTEMD_UNIT: &str = "hyperd.service";

/// Replaces each `(placeholder, value)` in one pass, so a value that happens to contain
/// a placeholder is left alone.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    loop {
        let next = values
            .iter()
            .filter_map(|(name, value)| rest.find(name).map(|at| (at, *name, value)))
            .min_by_key(|(at, _, _)| *at);
        match next {
            Some((at, name, value)) => {
                out.push_str(&rest[..at]);
                out.push_str(value);
                rest = &rest[at + name.len()..];
            }
            None => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// One word of a systemd command line: `%` and `$` escaped, quoted when needed.
fn systemd_word(arg: &str) -> String {
    let plain = arg.replace('%', "%%").replace('$', "$$");
    let needs_quotes = arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return plain;
    }
    let mut quoted = String::from("\"");
    for c in plain.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The systemd user unit running `hyperd` (an absolute path) with `--home` if given.
pub fn render_systemd_unit(hyperd: &str, home: Option<&str>) -> String {
    let mut words = vec![systemd_word(hyperd)];
    if let Some(home) = home {
        words.push("--home".into());
        words.push(systemd_word(home));
    }
    fill(SYSTEMD_TEMPLATE, &[("@HYPERD@", words.join(" "))])
}

/// The launchd agent running `hyperd` with `--home` if given, logging to `log`.
pub fn render_launchd_plist(hyperd: &str, home: Option<&str>, log: &str) -> String {
    let mut args = String::new();
    if let Some(home) = home {
        for arg in ["--home", home] {
            args.push_str(&format!("\n    <string>{}</string>", xml_escape(arg)));
        }
    }
    fill(
        LAUNCHD_TEMPLATE,
        &[
            ("@HYPERD@", xml_escape(hyperd)),
            ("@ARGS@", args),
            ("@LOG@", xml_escape(log)),
        ],
    )
}

/// `$XDG_CONFIG_HOME/systemd/user/hyperd.service` (`~/.config/...` by default).
pub fn systemd_unit_path() -> anyhow::Result<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| user_home().map(|home| home.join(".config")))
        .context("cannot find your configuration directory: set HOME or XDG_CONFIG_HOME")?;
    Ok(config.join("systemd").join("user").join(SYSTEMD_UNIT))
}

/// `~/Library/LaunchAgents/org.hyperd.hyperd.plist`.
pub fn launchd_plist_path() -> anyhow::Result<PathBuf> {
    let home = user_home().context("cannot find your home directory: set HOME")?;
    Ok(home
        .join("Library")
        .join("LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist")))
}

fn user_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn utf8(path: &Path) -> anyhow::Result<&str> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    if text.chars().any(char::is_control) {
        anyhow::bail!("{text:?} contains control characters");
    }
    Ok(text)
}

/// Creates `dir` and its parents, private to the user.
pub(crate) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs a service manager command; a failure names the command and what it said.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let line = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message");
    anyhow::bail!("`{line}` failed ({}): {said}", output.status)
}

/// Options of `service install`.
pub struct InstallOptions<'a> {
    /// `--hyperd PATH`.
    pub hyperd: Option<&'a Path>,
    /// `--home` (or `HYPERD_HOME`) when one was given: the service gets it too.
    pub home_arg: Option<&'a Path>,
    /// Also enable and start the service.
    pub now: bool,
}

/// `service install`.
pub async fn install(home: &Home, options: InstallOptions<'_>, json: bool) -> anyhow::Result<()> {
    let program = find_hyperd(options.hyperd)?;
    let home_arg = options.home_arg.map(absolute).transpose()?;
    let program_text = utf8(&program)?;
    let home_text = home_arg.as_deref().map(utf8).transpose()?;

    // A hyperd started with `hyperctl start` holds the home; the service would fail.
    let running = match connect::connect(home, Duration::from_secs(1)).await {
        Ok(_) => Some("a hyperd started outside the service manager is running on this home; stop it first with `hyperctl stop`"),
        Err(_) => None,
    };

    let (path, commands): (PathBuf, Vec<(&str, Vec<String>)>) = if cfg!(target_os = "linux") {
        let path = systemd_unit_path()?;
        write_file(&path, &render_systemd_unit(program_text, home_text))?;
        let commands = vec![
            ("systemctl", vec!["--user".into(), "daemon-reload".into()]),
            (
                "systemctl",
                vec![
                    "--user".into(),
                    "enable".into(),
                    "--now".into(),
                    "hyperd".into(),
                ],
            ),
        ];
        (path, commands)
    } else if cfg!(target_os = "macos") {
        let path = launchd_plist_path()?;
        let log = home.log_file();
        if let Some(dir) = log.parent() {
            create_dir(dir)?;
        }
        let log_text = utf8(&log)?;
        write_file(
            &path,
            &render_launchd_plist(program_text, home_text, log_text),
        )?;
        let path_text = path.display().to_string();
        let commands = vec![("launchctl", vec!["load".into(), "-w".into(), path_text])];
        (path, commands)
    } else {
        anyhow::bail!("`service install` supports Linux (systemd) and macOS (launchd) only");
    };

    let command_line = commands
        .iter()
        .map(|(program, args)| format!("{program} {}", args.join(" ")))
        .collect::<Vec<_>>()
        .join(" && ");
    if options.now {
        if let Some(problem) = running {
            anyhow::bail!(
                "wrote {}, but {problem}, then run `{command_line}`",
                path.display()
            );
        }
        for (program, args) in &commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(program, &args)
                .with_context(|| format!("wrote {}; starting it failed", path.display()))?;
        }
    }
    if json {
        return output::print_json(&json!({
            "file": path.display().to_string(),
            "hyperd": program_text,
            "home": home_text,
            "started": options.now,
        }));
    }
    let mut text = format!("wrote {}\nhyperd: {program_text}", path.display());
    if options.now {
        text.push_str("\nthe service is enabled and running");
    } else {
        if let Some(problem) = running {
            text.push_str(&format!("\nnote: {problem}"));
        }
        text.push_str(&format!(
            "\nto start it now and at every login, run:\n  {command_line}\n(or run `hyperctl service install --now`)"
        ));
    }
    output::print(text)
}

/// `service uninstall`.
pub fn uninstall(now: bool, json: bool) -> anyhow::Result<()> {
    let (path, hint) = if cfg!(target_os = "linux") {
        let path = systemd_unit_path()?;
        if !path.exists() {
            anyhow::bail!(
                "hyperd is not installed as a service ({} does not exist)",
                path.display()
            );
        }
        if now {
            run("systemctl", &["--user", "disable", "--now", "hyperd"])
                .context("cannot stop the service, so nothing was removed (without --now, uninstall only removes the files)")?;
        }
        // What `systemctl disable` removes, in case it was not run.
        if let Some(dir) = path.parent() {
            let wants = dir.join("default.target.wants").join(SYSTEMD_UNIT);
            if wants.symlink_metadata().is_ok() {
                fs::remove_file(&wants)
                    .with_context(|| format!("cannot remove {}", wants.display()))?;
            }
        }
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        if now {
            run("systemctl", &["--user", "daemon-reload"])?;
        }
        (
            path,
            "systemctl --user stop hyperd && systemctl --user daemon-reload".to_string(),
        )
    } else if cfg!(target_os = "macos") {
        let path = launchd_plist_path()?;
        if !path.exists() {
            anyhow::bail!(
                "hyperd is not installed as a service ({} does not exist)",
                path.display()
            );
        }
        let path_text = path.display().to_string();
        if now {
            run("launchctl", &["unload", "-w", &path_text])
                .context("cannot stop the service, so nothing was removed (without --now, uninstall only removes the file)")?;
        }
        fs::remove_file(&path).with_context(|| format!("cannot remove {path_text}"))?;
        (path, format!("launchctl remove {LAUNCHD_LABEL}"))
    } else {
        anyhow::bail!("`service uninstall` supports Linux (systemd) and macOS (launchd) only");
    };
    if json {
        return output::print_json(&json!({
            "removed": path.display().to_string(),
            "stopped": now,
        }));
    }
    if now {
        output::print(format!(
            "removed {}; the service is stopped",
            path.display()
        ))
    } else {
        output::print(format!(
            "removed {}\nif the service is running, stop it with:\n  {hint}",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_words_are_escaped() {
        assert_eq!(systemd_word("/usr/bin/hyperd"), "/usr/bin/hyperd");
        assert_eq!(systemd_word("/a b/hyperd"), "\"/a b/hyperd\"");
        assert_eq!(systemd_word("/a%b$c"), "/a%%b$$c");
        assert_eq!(systemd_word("/a \"b\"\\c"), "\"/a \\\"b\\\"\\\\c\"");
        assert_eq!(systemd_word(""), "\"\"");
    }

    #[test]
    fn placeholders_are_filled_once() {
        let unit = render_systemd_unit("/opt/@HYPERD@/hyperd", Some("/h"));
        assert!(
            unit.contains("\nExecStart=/opt/@HYPERD@/hyperd --home /h\n"),
            "{unit}"
        );
        let plist = render_launchd_plist("/x/@LOG@", None, "/l & <log>");
        assert!(plist.contains("<string>/x/@LOG@</string>"), "{plist}");
        assert!(
            plist.contains("<string>/l &amp; &lt;log&gt;</string>"),
            "{plist}"
        );
        assert!(!plist.contains("@ARGS@"));
    }
}
