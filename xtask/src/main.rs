//! `cargo run -p xtask -- dist [DIR]`: what the Debian package ships besides the binary, made
//! from the sources so that nothing is written twice by hand (default DIR: `target/dist`):
//!
//! - `man/dingrec.1` and `man/dingrec-<command>.1` for every command, from the clap
//!   definitions (what `--help` says);
//! - `completions/dingrec.bash`, `_dingrec` (zsh) and `dingrec.fish`;
//! - `systemd/dingrec.service`: the repository's unit with the binary at `/usr/bin/dingrec`.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

fn main() {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    if task != "dist" {
        eprintln!("usage: cargo run -p xtask -- dist [DIR]");
        std::process::exit(2);
    }
    let out = args
        .next()
        .map_or_else(|| PathBuf::from("target/dist"), PathBuf::from);
    if let Err(e) = dist(&out) {
        eprintln!("xtask dist: {e}");
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}

fn dist(out: &Path) -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let man = out.join("man");
    let completions = out.join("completions");
    let systemd = out.join("systemd");
    for d in [&man, &completions, &systemd] {
        std::fs::create_dir_all(d)?;
    }

    let cmd = dingrec::cli::Cli::command();
    write_man(&cmd, "dingrec", &man)?;
    for sub in cmd.get_subcommands() {
        let name = format!("dingrec-{}", sub.get_name());
        write_man(sub, &name, &man)?;
    }

    let mut cmd = dingrec::cli::Cli::command();
    for (shell, file) in [
        (clap_complete::Shell::Bash, "dingrec.bash"),
        (clap_complete::Shell::Zsh, "_dingrec"),
        (clap_complete::Shell::Fish, "dingrec.fish"),
    ] {
        let mut f = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, "dingrec", &mut f);
    }

    let unit = std::fs::read_to_string(root.join("systemd/dingrec.service"))?;
    // The same unit, its binary where the package puts it, and its first line saying so.
    let body = unit.split_once('\n').map_or("", |(_, rest)| rest);
    let packaged = format!(
        "# dingrec under systemd, as the Debian package installs it (README.md \"Install\").\n{}",
        body.replace("/usr/local/bin/dingrec", "/usr/bin/dingrec")
    );
    std::fs::write(systemd.join("dingrec.service"), packaged)?;
    Ok(())
}

/// One man page: `name`'s (a subcommand's is named `dingrec-<command>`, as git's are).
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    // clap takes static names (without its `string` feature, which would rebuild dingrec here
    // with other features); a one-shot tool can leak a few.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let bin: &'static str = Box::leak(name.replacen('-', " ", 1).into_boxed_str());
    let cmd = cmd.clone().name(name).bin_name(bin);
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(name.to_uppercase())
        .section("1")
        .manual("dingrec manual")
        .source(format!("dingrec {}", env!("CARGO_PKG_VERSION")))
        .render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)
}
