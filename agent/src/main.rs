fn main() {
    println!("hav-agent");
}
