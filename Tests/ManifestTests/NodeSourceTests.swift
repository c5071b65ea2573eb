import Foundation
import Manifest
import TestSupport
import Testing

/// Types ComfyUI-Manager's map lacks, settled by what the workflow says (cnr_id, aux_id) or by the
/// candidates' own NODE_CLASS_MAPPINGS, read without running their code.
@Suite("Node types the map lacks", .serialized)
struct NodeSourceTests {
    @Test func aCnrIDThatIsTheRepositoryNameResolvesAClassTheMapLacks() throws {
        let registry = try testRegistry()
        // The registry id of chflame163/ComfyUI_LayerStyle is comfyui_layerstyle; Manager's is layerstyle.
        for cnr in ["comfyui_layerstyle", "ComfyUI-LayerStyle", "layerstyle"] {
            guard case .package(let package, let via) = registry.resolve("LayerUtility: NotInTheMap", cnrID: cnr) else {
                Issue.record("\(cnr) did not resolve")
                continue
            }
            #expect(package.repository == "https://github.com/chflame163/ComfyUI_LayerStyle" && via == "properties", "\(cnr)")
        }
        guard case .package(let byAux, _) = registry.resolve("Anything", auxID: "someone/not-in-registry") else {
            Issue.record("aux_id did not resolve")
            return
        }
        #expect(byAux.repository == "https://github.com/someone/not-in-registry")
        #expect(registry.resolve("LayerUtility: NotInTheMap", cnrID: "no-such-pack") == .unresolved)
    }
}
