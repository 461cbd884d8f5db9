//! The `stockpipe` command: a thin clap layer over the library ([`cli`] holds one module per
//! subcommand).

mod cli;

fn main() -> anyhow::Result<()> {
    cli::main()
}
