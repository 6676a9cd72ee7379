use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use mkinstaller::build::{self, BuildOptions, ErrorKind, Source};
use mkinstaller::cli::{BuildArgs, Cli, Command, DEFAULT_INSTALLER};
use mkinstaller::show;
use mkinstaller::ui::Ui;
use util::size::human;

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Exit statuses, as `--help` lists them.
const FAILED: u8 = 1;
const USAGE: u8 = 2;
const REFUSED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Reports {
            sources,
            all,
            json,
            identity: Some(identity),
            ..
        }) => mkinstaller::reports::recovery::open(&sources, all, &identity, json)
            .map_err(|e| (REFUSED, e))
            .and_then(|text| util::out::stdout(&text).map_err(|e| (FAILED, e))),
        Some(Command::Reports {
            sources,
            all,
            json,
            csv,
            html,
            pending,
            identity: None,
        }) => {
            use mkinstaller::reports::{self, Shape};
            let shape = match (json, csv, html, pending) {
                (true, ..) => Shape::Json,
                (_, true, ..) => Shape::Csv,
                (_, _, true, _) => Shape::Html,
                (.., true) => Shape::Pending,
                _ => Shape::Table,
            };
            reports::show(&sources, all, shape)
                .map_err(|e| (REFUSED, e))
                .and_then(|text| util::out::stdout(&text).map_err(|e| (FAILED, e)))
        }
        Some(Command::Inspect { image, all, json }) => {
            show::inspect(&image, all, json).map_err(|e| (REFUSED, e))
        }
        Some(Command::Verify {
            image,
            trusted_key,
            jobs,
            json,
            quiet,
        }) => show::verify(
            &image,
            &trusted_key,
            jobs.unwrap_or_else(all_cores),
            json,
            quiet,
        )
        .map_err(|e| (FAILED, e)),
        Some(Command::Completions { shell }) => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mkinstaller", &mut text);
            util::out::stdout(&String::from_utf8_lossy(&text)).map_err(|e| (FAILED, e))
        }
        Some(Command::Man) => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut text)
                .map_err(|e| e.to_string())
                .and_then(|()| util::out::stdout(&String::from_utf8_lossy(&text)))
                .map_err(|e| (FAILED, e))
        }
        None => run_build(cli.build),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("mkinstaller: {e}");
            ExitCode::from(code)
        }
    }
}

fn run_build(a: BuildArgs) -> Result<(), (u8, String)> {
    let source = match (a.mass.clone(), a.flake.clone(), a.system.clone(), a.online.clone()) {
        (Some(file), None, None, None) => Source::Mass {
            file,
            host: a.host.clone(),
        },
        (None, Some(reference), None, None) => Source::Flake {
            reference,
            host: a.host.clone(),
        },
        (None, None, Some(path), None) => Source::System {
            path,
            name: a.name.clone(),
            profile: a.profile.clone(),
            not_bootable: a.not_bootable,
        },
        (None, None, None, Some(url)) => Source::Online { url },
        _ => {
            return Err((
                USAGE,
                "say what to install: --mass HOSTS.TOML, --flake REF, --system STORE-PATH, or --online URL for boot media of the online installer (see --help)".into(),
            ))
        }
    };
    if a.ssh.is_some() {
        return run_ssh(a, source);
    }
    let output = a.output.clone().ok_or((
        USAGE,
        "say where to write the image: -o usb.img (see --help)".to_string(),
    ))?;
    let format = build::OutputFormat::for_output(a.format, &output);
    let opts = build_options(&a, source, output, format, Vec::new());
    let ui = Ui {
        quiet: a.quiet || a.json,
    };
    let s = build::build(&opts, &ui).map_err(exit_of)?;
    summarise(&a, &s)
}

fn exit_of(e: build::Error) -> (u8, String) {
    let code = match e.kind {
        ErrorKind::Refused => REFUSED,
        ErrorKind::Failed => FAILED,
    };
    (code, e.to_string())
}

fn build_options(
    a: &BuildArgs,
    source: Source,
    output: PathBuf,
    format: build::OutputFormat,
    extra_ssh_keys: Vec<String>,
) -> BuildOptions {
    BuildOptions {
        source,
        output,
        format,
        size: a.size,
        installers: if a.installer.is_empty() {
            vec![std::env::var_os("MKINSTALLER_INSTALLER")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_INSTALLER))]
        } else {
            a.installer.clone()
        },
        cache_dir: a
            .cache_dir
            .clone()
            .unwrap_or_else(media::narcache::default_dir),
        profiles_dir: a.profiles_dir.clone(),
        level: a.level,
        kernel_args: a.kernel_args.clone(),
        boot_loader: a.boot_loader.into(),
        sign_key: a.sign_key.clone(),
        public_extra_files: a.public_extra_files,
        secrets_passphrase_file: a.secrets_passphrase_file.clone(),
        verify: a.verify,
        rewrite: a.rewrite,
        threads: a.jobs.unwrap_or_else(all_cores),
        extra_ssh_keys,
        plan_kit: a.dry_run,
    }
}

/// `--ssh`: the kexec bundle, built (into -o, or a work directory removed at the end) and
/// booted on the machine, which is then followed to its report.
fn run_ssh(a: BuildArgs, source: Source) -> Result<(), (u8, String)> {
    use mkinstaller::ssh::{self, Ssh, SshInstall, WorkDir};
    let target = a.ssh.clone().expect("--ssh");
    if a.format.is_some_and(|f| f != build::OutputFormat::Kexec) {
        return Err((
            USAGE,
            "--ssh boots a kexec bundle: leave out --format (or say --format kexec)".into(),
        ));
    }
    if a.dry_run && matches!(source, Source::Online { .. }) {
        return Err((
            USAGE,
            "--ssh --dry-run plans from the payload's manifest, which --online leaves on the site: plan there with `autoinstall-terminal --url URL --dry-run` on the machine, or dry-run with --mass".into(),
        ));
    }
    let mut keys = Vec::new();
    if let Some(id) = &a.ssh_identity {
        let public = PathBuf::from(format!("{}.pub", id.display()));
        let line = std::fs::read_to_string(&public).map_err(|e| {
            (REFUSED, format!("--ssh-identity {}: its public key {}: {e} (make it with: ssh-keygen -y -f {} > {})", id.display(), public.display(), id.display(), public.display()))
        })?;
        let line = line.trim().to_string();
        manifest::hosts::check_authorized_key(&line)
            .map_err(|e| (REFUSED, format!("{}: {e}", public.display())))?;
        if matches!(source, Source::Online { .. }) {
            eprintln!("mkinstaller: warning: --online: the site's [defaults] ssh-authorized-keys decide who may follow the installer, not --ssh-identity");
        } else {
            keys.push(line);
        }
    }
    let cache_dir = a
        .cache_dir
        .clone()
        .unwrap_or_else(media::narcache::default_dir);
    let (output, _work) = match &a.output {
        Some(o) => (o.clone(), None),
        None => {
            let dir = cache_dir.join(format!("ssh-bundle-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            (dir.clone(), Some(WorkDir(dir)))
        }
    };
    let mut a = a;
    a.cache_dir = Some(cache_dir);
    // The installer waits for us to read its end before it reboots: we reconnect only
    // after the old kernel's connection has timed out, and a small install is quicker.
    a.kernel_args = format!(
        "{} autoinstall.await-follower={}",
        a.kernel_args, a.ssh_wait
    )
    .trim()
    .to_string();
    let opts = build_options(&a, source, output, build::OutputFormat::Kexec, keys);
    let ui = Ui {
        quiet: a.quiet || a.json,
    };
    let how = SshInstall {
        ssh: Ssh {
            target,
            identity: a.ssh_identity.clone(),
            options: a.ssh_options.clone(),
            pinned: None,
        },
        wait: std::time::Duration::from_secs(a.ssh_wait),
        json: a.json,
        dry_run: a.dry_run,
    };
    match ssh::install(&opts, &how, &ui).map_err(exit_of)? {
        (0, said) => {
            ui.say(&said);
            Ok(())
        }
        (code, said) => Err((code, said)),
    }
}

fn summarise(a: &BuildArgs, s: &build::Summary) -> Result<(), (u8, String)> {
    if a.json {
        let text = serde_json::to_string_pretty(&s).expect("serialises");
        util::out::stdout(&format!("{text}\n")).map_err(|e| (FAILED, e))?;
    } else if !a.quiet && s.hosts == 0 {
        eprintln!(
            "{}: boot media for the online installer, {}, {:.1} s",
            s.output.display(),
            human(s.image_bytes),
            s.seconds
        );
    } else if !a.quiet {
        if let Some(r) = &s.refreshed {
            eprintln!(
                "{}: refreshed in place: {} new file{} ({}) written, {} kept; {} written in all",
                s.output.display(),
                r.new_files,
                if r.new_files == 1 { "" } else { "s" },
                human(r.new_bytes),
                r.kept_files,
                human(r.bytes_written)
            );
        }
        let ratio = s.compressed_bytes as f64 / s.nar_bytes.max(1) as f64;
        eprintln!(
            "{}: {} host{}, {} store paths ({} from cache), {} of NAR in {} ({:.0}%), image {}, {:.1} s",
            s.output.display(),
            s.hosts,
            if s.hosts == 1 { "" } else { "s" },
            s.paths,
            s.paths_from_cache,
            human(s.nar_bytes),
            human(s.compressed_bytes),
            ratio * 100.0,
            human(s.image_bytes),
            s.seconds
        );
    }
    Ok(())
}
