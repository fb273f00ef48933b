//! The `shardgate` binary: allocator, CLI parse, logging, then [`shardgate::cli::run`].

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(shardgate::cli::run());
}
