//! `tandem cli-reference`: the whole command tree's help as one Markdown page (docs/cli.md).
//!
//! The page is the binary's own `--help` for every command, so it cannot drift from what users
//! see; a CLI test fails when the checked-in page and the binary disagree.

use clap::CommandFactory;

use crate::cli::Cli;

/// The Markdown page: a list of the commands, then each command's long help.
pub fn markdown() -> String {
    let mut root = Cli::command();
    root.build();
    let mut commands = Vec::new();
    collect(&root, &mut commands);
    let mut page = String::from(
        "# CLI reference\n\n\
         Every command's `--help`, generated from the binary (`cargo run -p tandem-cli -- \
         cli-reference > docs/cli.md`); a test fails when this page and the binary disagree.\n\n",
    );
    for command in &commands {
        let name = command.get_bin_name().unwrap_or(command.get_name());
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        page += &format!("- [`{name}`](#{}): {about}\n", anchor(name));
    }
    for command in &commands {
        let name = command.get_bin_name().unwrap_or(command.get_name());
        let help = command.clone().render_long_help().to_string();
        page += &format!("\n## {name}\n\n```text\n{}\n```\n", help.trim_end());
    }
    page
}

/// The command and its visible subcommands, depth first, in declaration order.
fn collect(command: &clap::Command, into: &mut Vec<clap::Command>) {
    into.push(command.clone());
    for sub in command.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            collect(sub, into);
        }
    }
}

/// The anchor a Markdown renderer gives a heading: lower case, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading.to_lowercase().replace(' ', "-")
}

/// Prints the page to stdout.
pub fn run() -> anyhow::Result<()> {
    print!("{}", markdown());
    Ok(())
}
