//! `--online URL`: boot media (usb, iso or netboot) that carry only the installer
//! environment and the site's URL. No fleet is read: the site is the fleet.

use std::time::Instant;

use media::esp::{esp_tree, kernel_options, EnvBoot};
use media::ids;
use sha2::{Digest, Sha256};

use crate::build::source_date_epoch;
use crate::options::{BuildOptions, Error, OutputFormat, Phases, Summary};
use crate::outputs::{output_size, write_boot_dir, write_iso, write_usb};
use crate::refresh::usb_ids;
use crate::ui::Ui;

/// `--online URL`: boot media that carry only the installer environment, with
/// `autoinstall.url=URL` on its kernel command line. No fleet is read: the site is the fleet.
pub fn build_online_boot(
    opts: &BuildOptions,
    url: &str,
    started: Instant,
    ui: &Ui,
) -> Result<Summary, Error> {
    check_online_url(url)?;
    if opts.format == OutputFormat::Cache {
        return Err("--online makes boot media that fetch from a cache site; make the site itself with --mass HOSTS.TOML --format cache -o DIR".into());
    }
    // Every environment given: a stick for the online installer boots each architecture the
    // site serves.
    let envs = crate::envs::load_given(&opts.installers, opts.boot_loader)?;
    let boots: Vec<EnvBoot> = envs
        .iter()
        .map(|env| EnvBoot {
            env,
            options: kernel_options(env, &format!("autoinstall.url={url}"), &opts.kernel_args),
        })
        .collect();
    let title = format!("NixOS autoinstall (online: {url})");
    let seed = Sha256::digest(boots[0].options.as_bytes());
    let timestamp = source_date_epoch();
    let empty = media::fat32::Tree::new();
    let mut refreshed = None;
    let bytes = match opts.format {
        OutputFormat::Usb => {
            let size = output_size(opts)?;
            let esp = esp_tree(&boots, &title)?;
            let existing = crate::refresh::existing(opts, ui);
            let ids = usb_ids(existing.as_deref(), opts.rewrite, &seed, timestamp);
            let (bytes, r) = write_usb(
                opts,
                &esp,
                &empty,
                &ids,
                existing.as_deref(),
                size,
                envs.iter().find_map(|e| e.bios.as_ref()),
                ui,
            )?;
            refreshed = r;
            bytes
        }
        OutputFormat::Iso => {
            let esp = esp_tree(&boots, &title)?;
            let volume_id = format!("AIONLINE_{:08X}", ids::volume_id(&seed, "iso"));
            let mut tree = media::fat32::Tree::new();
            media::esp::add_cd_boot(&mut tree, &boots, &title)?;
            write_iso(
                opts,
                &esp,
                &tree,
                &volume_id,
                &seed,
                timestamp,
                envs.iter().find_map(|e| e.bios_hybrid.as_deref()),
                ui,
            )?
        }
        OutputFormat::Netboot | OutputFormat::Kexec => {
            let nb = media::netboot::Netboot {
                env: crate::envs::single(&envs, "netboot files")?,
                options: &boots[0].options,
                title: &title,
                embedded: None,
                mtime: timestamp.max(1) as u32,
            };
            write_boot_dir(opts, &nb, ui)?
        }
        OutputFormat::Cache => unreachable!("refused above"),
    };
    Ok(Summary {
        output: opts.output.clone(),
        hosts: 0,
        paths: 0,
        nar_bytes: 0,
        compressed_bytes: 0,
        paths_compressed: 0,
        paths_from_cache: 0,
        image_bytes: bytes,
        seconds: started.elapsed().as_secs_f64(),
        phase_seconds: Phases::default(),
        refreshed,
    })
}

/// A URL the installer can use, and that survives the kernel command line (no spaces or
/// quotes, which would split or end the option).
fn check_online_url(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !url.contains(|c: char| c.is_whitespace() || c == '"' || c.is_control()) => Ok(()),
        _ => Err(format!("--online {url:?}: expected the cache site's http:// or https:// URL, without spaces or quotes (e.g. http://10.0.0.1/fleet)").into()),
    }
}
