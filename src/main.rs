fn main() {
    std::process::exit(knetsim::cli::main());
}
