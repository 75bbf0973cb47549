//! The `fledge` command: the CLI ([`cli`]), the demo ([`demo`]) and how both show
//! the API's answers in a terminal ([`view`]). The server is the `fledge-server`
//! crate, the API's types and client `fledge-api`.
//!
//! Module layers, lowest first: `logs` and `view` (depend on no other module),
//! `demo` (on `view`), `cli` (on all three). Never the other way round.

mod cli;
mod demo;
mod logs;
mod view;

// The proxy allocates per request (heads, header maps, body frames) on its worker
// threads: glibc's malloc showed up as about 8% of the proxy's CPU in `perf`, which
// is why the `bench_proxy` example has run on mimalloc's thread-local heaps; the
// binary users run now does too. Without transparent huge pages (`no_thp`): with
// them, mimalloc's arena is backed by 2 MiB pages, and an idle `fledge serve` held
// 20 MiB of anonymous memory instead of 4.5 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::parse();
    cli::run(&args)
}
