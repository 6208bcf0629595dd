//! The Proxmox VE API simulator from the tests, on its own for demos:
//! `cargo run --example pve_sim -- [NODE...]` prints its URL and API token, then serves until
//! Ctrl-C. Add it to siteward as a node with that URL and token.

#[path = "../tests/e2e/pve_sim.rs"]
mod pve_sim;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: Vec<&str> = if args.is_empty() {
        vec!["pve1"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let sim = pve_sim::PveSim::start(&nodes).await?;
    println!("Proxmox VE simulator for nodes {nodes:?}");
    println!("  api_url:                  {}", sim.url());
    println!("  api_token_id_or_username: root@pam!siteward");
    println!("  api_token_secret:         4b1d6e0e-0000-4000-8000-000000000001");
    println!("  (or user root@pam, password pve-password)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
