use std::process::ExitCode;

use clap::Parser;

use autoinstall_terminal::identify;

#[derive(Parser)]
#[command(
    name = "autoinstall-terminal",
    version,
    about = "Install this machine's NixOS host from an installer stick",
    long_about = "Install this machine's NixOS host from an installer stick. This build can \
                  identify the machine (--identify); partitioning and installing land with the \
                  autoinstall issue."
)]
struct Cli {
    /// Print the machine's SMBIOS serial, UUID and MAC addresses, and exit.
    #[arg(long)]
    identify: bool,
    /// With --identify: print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.identify {
        eprintln!("autoinstall-terminal: this build only identifies machines (--identify); installing is not implemented yet");
        return ExitCode::from(2);
    }
    let id = identify::identify();
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&id).expect("serialises"));
        return ExitCode::SUCCESS;
    }
    match (&id.serial, &id.serial_rejected) {
        (Some(s), _) => println!("serial: {s} (from {})", id.source.unwrap_or("?")),
        (None, Some(why)) => println!("serial: none ({why})"),
        (None, None) => println!("serial: none (the firmware reports no system serial)"),
    }
    println!("uuid: {}", id.uuid.as_deref().unwrap_or("none"));
    for m in &id.macs {
        println!("mac: {m}");
    }
    ExitCode::SUCCESS
}
