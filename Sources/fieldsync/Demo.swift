import ArgumentParser

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the FieldSync demo.")
    func run() async throws { print("demo: under construction") }
}
