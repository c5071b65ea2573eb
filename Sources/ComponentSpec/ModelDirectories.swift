/// Which models folder a loader's input refers to: ComfyUI's folder names (folder_paths.py) for the
/// core loaders and for the input names custom loaders share, with a fallback on words of the
/// node's type.
package enum ModelDirectories {
    /// File name endings of model weights. A widget value with one of them is a model file.
    package static let extensions: [String] = [
        ".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".pkl", ".pt2", ".engine",
    ]

    /// Whether a widget or input value names a model file (not a URL, not a sentence).
    package static func looksLikeModelFile(_ value: String) -> Bool {
        guard !value.isEmpty, value.utf8.count <= 1024, !value.contains("\n"), !value.contains("://") else { return false }
        let lower = value.lowercased()
        return extensions.contains { lower.hasSuffix($0) && lower.count > $0.count }
    }

    /// Core loaders: widget names in order (UI format stores values by position) and the folder of each.
    package static let loaders: [String: [(name: String, directory: String?)]] = [
        "CheckpointLoaderSimple": [("ckpt_name", "checkpoints")],
        "CheckpointLoader": [("config_name", "configs"), ("ckpt_name", "checkpoints")],
        "ImageOnlyCheckpointLoader": [("ckpt_name", "checkpoints")],
        "unCLIPCheckpointLoader": [("ckpt_name", "checkpoints")],
        "VAELoader": [("vae_name", "vae")],
        "LoraLoader": [("lora_name", "loras"), ("strength_model", nil), ("strength_clip", nil)],
        "LoraLoaderModelOnly": [("lora_name", "loras"), ("strength_model", nil)],
        "CLIPLoader": [("clip_name", "text_encoders"), ("type", nil), ("device", nil)],
        "DualCLIPLoader": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"), ("type", nil), ("device", nil)],
        "TripleCLIPLoader": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"), ("clip_name3", "text_encoders")],
        "QuadrupleCLIPLoader": [
            ("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"), ("clip_name3", "text_encoders"),
            ("clip_name4", "text_encoders"),
        ],
        "UNETLoader": [("unet_name", "diffusion_models"), ("weight_dtype", nil)],
        "ControlNetLoader": [("control_net_name", "controlnet")],
        "DiffControlNetLoader": [("control_net_name", "controlnet")],
        "CLIPVisionLoader": [("clip_name", "clip_vision")],
        "StyleModelLoader": [("style_model_name", "style_models")],
        "GLIGENLoader": [("gligen_name", "gligen")],
        "HypernetworkLoader": [("hypernetwork_name", "hypernetworks"), ("strength", nil)],
        "UpscaleModelLoader": [("model_name", "upscale_models")],
        "PhotoMakerLoader": [("photomaker_model_name", "photomaker")],
        "ModelPatchLoader": [("name", "model_patches")],
        "AudioEncoderLoader": [("audio_encoder_name", "audio_encoders")],
        "LatentUpscaleModelLoader": [("model_name", "latent_upscale_models")],
        "LTXAVTextEncoderLoader": [("text_encoder", "text_encoders"), ("ckpt_name", "checkpoints"), ("device", nil)],
        "LTXVAudioVAELoader": [("ckpt_name", "checkpoints")],
        "LoadMoGeModel": [("model_name", "geometry_estimation")],
        "LoadDA3Model": [("model_name", "geometry_estimation")],
        "LoadBackgroundRemovalModel": [("bg_removal_name", "background_removal")],
        "ConditioningLoader": [("conditioning_name", "embeddings")],
        "OpticalFlowLoader": [("model_name", "optical_flow")],
        "FrameInterpolationModelLoader": [("model_name", "frame_interpolation")],
        "SAM3DBody_Loader": [("model_name", "detection")],
        "CreateHookLora": [("lora_name", "loras")],
        "CreateHookLoraModelOnly": [("lora_name", "loras")],
        // Widely used custom loaders whose widget order is stable.
        "UnetLoaderGGUF": [("unet_name", "diffusion_models")],
        "UnetLoaderGGUFAdvanced": [("unet_name", "diffusion_models")],
        "CLIPLoaderGGUF": [("clip_name", "text_encoders"), ("type", nil)],
        "DualCLIPLoaderGGUF": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"), ("type", nil)],
        "TripleCLIPLoaderGGUF": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"), ("clip_name3", "text_encoders")],
        "CheckpointLoader|pysssss": [("ckpt_name", "checkpoints")],
        "LoraLoader|pysssss": [("lora_name", "loras"), ("strength_model", nil), ("strength_clip", nil)],
        "Efficient Loader": [("ckpt_name", "checkpoints"), ("vae_name", "vae"), ("clip_skip", nil), ("lora_name", "loras")],
        "Eff. Loader SDXL": [
            ("base_ckpt_name", "checkpoints"), ("base_clip_skip", nil), ("refiner_ckpt_name", "checkpoints"),
            ("refiner_clip_skip", nil), ("positive_ascore", nil), ("negative_ascore", nil), ("vae_name", "vae"),
        ],
        "IPAdapterModelLoader": [("ipadapter_file", "ipadapter")],
        "InstantIDModelLoader": [("instantid_file", "instantid")],
        "PulidModelLoader": [("pulid_file", "pulid")],
        "PulidFluxModelLoader": [("pulid_file", "pulid")],
        "ADE_LoadAnimateDiffModel": [("model_name", "animatediff_models")],
        "ADE_AnimateDiffLoaderGen1": [("model_name", "animatediff_models")],
        "ADE_AnimateDiffLoaderWithContext": [("model_name", "animatediff_models")],
        "UltralyticsDetectorProvider": [("model_name", "ultralytics")],
        "SAMLoader": [("model_name", "sams")],
        "ONNXDetectorProvider": [("model_name", "onnx")],
        "WanVideoModelLoader": [("model", "diffusion_models")],
        "WanVideoVAELoader": [("model_name", "vae")],
        "LoadWanVideoT5TextEncoder": [("model_name", "text_encoders")],
        "LoadWanVideoClipTextEncoder": [("model_name", "clip_vision")],
        "WanVideoLoraSelect": [("lora", "loras")],
        "HyVideoModelLoader": [("model", "diffusion_models")],
        "HyVideoVAELoader": [("model_name", "vae")],
        "DownloadAndLoadCogVideoModel": [],
        "ControlNetLoaderAdvanced": [("control_net_name", "controlnet")],
        "ACN_ControlNetLoaderAdvanced": [("control_net_name", "controlnet")],
        "DiffControlNetLoaderAdvanced": [("control_net_name", "controlnet")],
        "CheckpointLoaderNF4": [("ckpt_name", "checkpoints")],
        "LoraLoaderBlockWeight //Inspire": [("lora_name", "loras")],
        "ImpactSAMLoader": [("model_name", "sams")],
    ]

    /// Input names shared by many loaders (API format names, and names of widget inputs in the UI format).
    package static let inputNames: [String: String] = [
        "ckpt_name": "checkpoints", "base_ckpt_name": "checkpoints", "refiner_ckpt_name": "checkpoints",
        "checkpoint": "checkpoints", "checkpoint_name": "checkpoints",
        "lora_name": "loras", "lora": "loras", "lora_file": "loras",
        "vae_name": "vae", "vae": "vae",
        "unet_name": "diffusion_models", "diffusion_model": "diffusion_models",
        "clip_name": "text_encoders", "clip_name1": "text_encoders", "clip_name2": "text_encoders",
        "clip_name3": "text_encoders", "clip_name4": "text_encoders", "t5_name": "text_encoders",
        "text_encoder": "text_encoders", "text_encoder_name": "text_encoders",
        "control_net_name": "controlnet", "controlnet_name": "controlnet", "controlnet": "controlnet",
        "upscale_model": "upscale_models", "upscale_model_name": "upscale_models",
        "clip_vision": "clip_vision", "clip_vision_name": "clip_vision",
        "style_model_name": "style_models", "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
        "ipadapter_file": "ipadapter", "ipadapter_name": "ipadapter", "instantid_file": "instantid",
        "pulid_file": "pulid", "photomaker_model_name": "photomaker", "motion_model": "animatediff_models",
        "embedding_name": "embeddings", "audio_encoder_name": "audio_encoders", "config_name": "configs",
    ]

    /// The folder for a model file found in input `name` of a node of type `classType`, if it can be told.
    package static func directory(classType: String, inputName: String?) -> String? {
        if let entries = loaders[classType] {
            if let inputName, let match = entries.first(where: { $0.name == inputName }) { return match.directory }
            let folders = Set(entries.compactMap(\.directory)).subtracting(["configs"])
            if folders.count == 1, let only = folders.first { return only }
        }
        if let inputName {
            let lower = inputName.lowercased()
            if let known = inputNames[lower] { return known }
            if let guess = keywordDirectory(lower) { return guess }
        }
        return keywordDirectory(classType.lowercased())
    }

    /// Folder from words in an input name or a node type ("lora" → loras, …); nil when nothing fits.
    static func keywordDirectory(_ lower: String) -> String? {
        let rules: [(words: [String], directory: String)] = [
            (["clip_vision", "clipvision"], "clip_vision"),
            (["lora", "lycoris"], "loras"),
            (["controlnet", "control_net"], "controlnet"),
            (["upscale", "esrgan"], "upscale_models"),
            (["ipadapter", "ip_adapter"], "ipadapter"),
            (["instantid"], "instantid"),
            (["pulid"], "pulid"),
            (["animatediff", "ade_", "motion_model"], "animatediff_models"),
            (["ultralytics", "bbox", "segm", "yolo"], "ultralytics"),
            (["sam_model", "samloader", "sam2"], "sams"),
            (["vae"], "vae"),
            (["unet", "diffusion_model", "diffusionmodel"], "diffusion_models"),
            (["clip", "text_encoder", "textencoder", "t5"], "text_encoders"),
            (["ckpt", "checkpoint"], "checkpoints"),
            (["style_model"], "style_models"),
            (["embedding"], "embeddings"),
        ]
        for rule in rules where rule.words.contains(where: { lower.contains($0) }) { return rule.directory }
        return nil
    }
}
