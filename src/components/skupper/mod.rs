//! `knetsim skrouterd`: a Skupper-style router configured like skupper-router.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SkrouterdArgs {
    /// Router configuration file (skupper-router's JSON format).
    #[arg(short = 'c', long = "config")]
    pub config: std::path::PathBuf,
}

pub fn run(_args: SkrouterdArgs) -> anyhow::Result<()> {
    anyhow::bail!("skrouterd: not implemented yet")
}
