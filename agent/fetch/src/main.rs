//! `infra-agent-fetch`: the agent's fetches over the network, in their own process.
//!
//! infra-agent runs this program from the directory of its own executable, writes one
//! request (JSON) to its standard input and reads one answer (JSON) from its standard
//! output; `infra_agent::git::fetcher` holds both sides. It exists so that the agent's
//! own executable links no OpenSSL: see ARCHITECTURE.md, "The fetch helper".

// git2 is a dependency only for its `ssh` and `https` features, which cargo enables in
// the one libgit2 that infra_agent links into this executable.
use git2 as _;

fn main() -> std::process::ExitCode {
    infra_agent::git::fetcher::serve()
}
