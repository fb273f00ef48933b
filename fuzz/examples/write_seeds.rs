//! Writes the seed corpus `fuzz/corpus/<target>/seed-*` from `src/seeds.rs`; run by hand after
//! changing the seeds: `cargo run -p shardgate-fuzz --example write_seeds`.

use std::path::Path;

use shardgate_fuzz::{seeds::seeds, TARGETS};

fn main() -> std::io::Result<()> {
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds(target) {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
