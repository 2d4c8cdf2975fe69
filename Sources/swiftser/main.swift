import SIPCore
import Foundation
for f in CommandLine.arguments.dropFirst() {
    let b = Array(FileManager.default.contents(atPath: f)!)
    do { let m = try SIPMessage.parse(b); try m.validate(); print(f.split(separator: "/").last!, "OK") }
    catch { print(f.split(separator: "/").last!, error.statusCode, error.reasonPhrase, "|", error) }
}
