use clap::Parser;

fn main() -> anyhow::Result<()> {
    registrar::cli::run(registrar::cli::Cli::parse())
}
