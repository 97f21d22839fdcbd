//! Cost of the first random bytes aws-lc draws in a fresh process (the cold-start cost of its
//! entropy seeding). Build it with and without `AWS_LC_SYS_NO_JITTER_ENTROPY` to compare;
//! docs/performance.md has the numbers and the commands.

fn main() {
    let started = std::time::Instant::now();
    let mut bytes = [0u8; 32];
    let ok = aws_lc_rs::rand::fill(&mut bytes).is_ok();
    let first = started.elapsed();
    let again = std::time::Instant::now();
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    println!(
        "first_fill_us={} second_fill_us={} ok={ok}",
        first.as_micros(),
        again.elapsed().as_micros()
    );
}
