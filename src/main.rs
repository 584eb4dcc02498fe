//! The `quartermaster` command: everything is in the library's `cli` module.

fn main() -> anyhow::Result<()> {
    quartermaster::cli::main()
}
