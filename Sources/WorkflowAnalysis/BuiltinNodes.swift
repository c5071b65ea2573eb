import ComponentSpec

/// Node types that ship with ComfyUI itself (nodes.py, comfy_extras/, the frontend), so a workflow
/// that uses them needs no custom node. The registry's entry for the ComfyUI repository adds the
/// types of newer releases (API nodes and the like) when it is loaded.
package enum BuiltinNodes {
    /// The package name used for core node types (ComfyUI's own `cnr_id`).
    package static let package = "comfy-core"
    package static let repository = "https://github.com/comfyanonymous/ComfyUI"

    /// Types that exist only in the frontend: they never reach the server and need nothing installed.
    package static let frontendOnly: Set<String> = [
        "Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Comfy.Note", "Comfy.MarkdownNote",
        "GroupNode", "workflow/input", "workflow/output",
    ]

    package static func contains(_ type: String) -> Bool {
        types.contains(type) || frontendOnly.contains(type)
    }

    package static let types: Set<String> = [
        // nodes.py
        "KSampler", "KSamplerAdvanced", "CheckpointLoaderSimple", "CheckpointLoader", "DiffusersLoader",
        "unCLIPCheckpointLoader", "CLIPTextEncode", "CLIPSetLastLayer", "VAEDecode", "VAEEncode", "VAEEncodeForInpaint",
        "VAEDecodeTiled", "VAEEncodeTiled", "VAELoader", "EmptyLatentImage", "LatentUpscale", "LatentUpscaleBy",
        "LatentFromBatch", "RepeatLatentBatch", "SaveImage", "PreviewImage", "LoadImage", "LoadImageMask",
        "LoadImageOutput", "ImageScale", "ImageScaleBy", "ImageInvert", "ImageBatch", "ImagePadForOutpaint",
        "EmptyImage", "ConditioningAverage", "ConditioningCombine", "ConditioningConcat", "ConditioningSetArea",
        "ConditioningSetAreaPercentage", "ConditioningSetAreaStrength", "ConditioningSetMask", "ConditioningZeroOut",
        "ConditioningSetTimestepRange", "SetLatentNoiseMask", "LatentComposite", "LatentBlend", "LatentRotate",
        "LatentFlip", "LatentCrop", "LoraLoader", "LoraLoaderModelOnly", "CLIPLoader", "UNETLoader", "DualCLIPLoader",
        "CLIPVisionEncode", "StyleModelApply", "unCLIPConditioning", "ControlNetApply", "ControlNetApplyAdvanced",
        "ControlNetLoader", "DiffControlNetLoader", "StyleModelLoader", "CLIPVisionLoader", "GLIGENLoader",
        "GLIGENTextBoxApply", "InpaintModelConditioning", "LoadLatent", "SaveLatent",
        // comfy_extras/nodes_latent.py
        "LatentAdd", "LatentSubtract", "LatentMultiply", "LatentInterpolate", "LatentBatch", "LatentBatchSeedBehavior",
        "LatentApplyOperation", "LatentApplyOperationCFG", "LatentOperationTonemapReinhard", "LatentOperationSharpen",
        "LatentConcat", "LatentCut", "LatentCutToBatch",
        // nodes_hypernetwork.py, nodes_upscale_model.py, nodes_post_processing.py
        "HypernetworkLoader", "UpscaleModelLoader", "ImageUpscaleWithModel", "ImageBlend", "ImageBlur",
        "ImageQuantize", "ImageSharpen", "ImageScaleToTotalPixels", "ImageScaleToMaxDimension",
        // nodes_mask.py
        "LatentCompositeMasked", "ImageCompositeMasked", "MaskToImage", "ImageToMask", "ImageColorToMask",
        "SolidMask", "InvertMask", "CropMask", "MaskComposite", "FeatherMask", "GrowMask", "ThresholdMask",
        "MaskPreview",
        // nodes_rebatch.py, nodes_model_merging*.py
        "RebatchLatents", "RebatchImages", "ModelMergeSimple", "ModelMergeBlocks", "ModelMergeSubtract",
        "ModelMergeAdd", "CheckpointSave", "CLIPMergeSimple", "CLIPMergeSubtract", "CLIPMergeAdd", "CLIPSave",
        "VAESave", "ModelSave", "ModelMergeSD1", "ModelMergeSD2", "ModelMergeSDXL", "ModelMergeSD3_2B",
        "ModelMergeAuraflow", "ModelMergeFlux1", "ModelMergeSD35_Large", "ModelMergeMochiPreview", "ModelMergeLTXV",
        "ModelMergeCosmos7B", "ModelMergeCosmos14B", "ModelMergeWAN2_1", "ModelMergeCosmosPredict2_2B",
        "ModelMergeCosmosPredict2_14B", "ModelMergeQwenImage",
        // nodes_tomesd.py, nodes_clip_sdxl.py, nodes_canny.py, nodes_freelunch.py
        "TomePatchModel", "CLIPTextEncodeSDXLRefiner", "CLIPTextEncodeSDXL", "Canny", "FreeU", "FreeU_V2",
        // nodes_custom_sampler.py
        "SamplerCustom", "SamplerCustomAdvanced", "BasicScheduler", "KarrasScheduler", "ExponentialScheduler",
        "PolyexponentialScheduler", "LaplaceScheduler", "VPScheduler", "BetaSamplingScheduler", "SDTurboScheduler",
        "KSamplerSelect", "SamplerEulerAncestral", "SamplerEulerAncestralCFGPP", "SamplerLMS", "SamplerDPMPP_3M_SDE",
        "SamplerDPMPP_2M_SDE", "SamplerDPMPP_SDE", "SamplerDPMPP_2S_Ancestral", "SamplerDPMAdaptative",
        "SamplerER_SDE", "SamplerSASolver", "SplitSigmas", "SplitSigmasDenoise", "FlipSigmas", "SetFirstSigma",
        "ExtendIntermediateSigmas", "SamplingPercentToSigma", "CFGGuider", "DualCFGGuider", "BasicGuider",
        "RandomNoise", "DisableNoise", "AddNoise", "ManualSigmas",
        // nodes_advanced_samplers.py, nodes_align_your_steps.py, nodes_gits.py, nodes_optimalsteps.py
        "SamplerLCMUpscale", "SamplerEulerCFGpp", "AlignYourStepsScheduler", "GITSScheduler", "OptimalStepsScheduler",
        // nodes_hypertile.py, nodes_model_advanced.py, nodes_model_downscale.py
        "HyperTile", "ModelSamplingDiscrete", "ModelSamplingContinuousEDM", "ModelSamplingContinuousV",
        "ModelSamplingStableCascade", "ModelSamplingSD3", "ModelSamplingAuraFlow", "ModelSamplingFlux", "RescaleCFG",
        "ModelComputeDtype", "PatchModelAddDownscale",
        // nodes_images.py
        "ImageCrop", "RepeatImageBatch", "ImageFromBatch", "ImageAddNoise", "SaveAnimatedWEBP", "SaveAnimatedPNG",
        "SaveSVGNode", "ImageStitch", "ResizeAndPadImage", "GetImageSize", "ImageRotate", "ImageFlip",
        "ImageMergeTileList", "ImageSplitTileList",
        // nodes_video_model.py, nodes_sag.py, nodes_perpneg.py, nodes_stable3d.py, nodes_sdupscale.py
        "ImageOnlyCheckpointLoader", "SVD_img2vid_Conditioning", "VideoLinearCFGGuidance", "VideoTriangleCFGGuidance",
        "ImageOnlyCheckpointSave", "ConditioningSetAreaPercentageVideo", "SelfAttentionGuidance", "PerpNeg",
        "PerpNegGuider", "StableZero123_Conditioning", "StableZero123_Conditioning_Batched", "SV3D_Conditioning",
        "SD_4XUpscale_Conditioning",
        // nodes_photomaker.py, nodes_pixart.py, nodes_cond.py, nodes_morphology.py
        "PhotoMakerLoader", "PhotoMakerEncode", "CLIPTextEncodePixArtAlpha", "CLIPTextEncodeControlnet",
        "T5TokenizerOptions", "Morphology", "ImageRGBToYUV", "ImageYUVToRGB",
        // nodes_stable_cascade.py, nodes_differential_diffusion.py, nodes_ip2p.py
        "StableCascade_EmptyLatentImage", "StableCascade_StageB_Conditioning", "StableCascade_StageC_VAEEncode",
        "StableCascade_SuperResolutionControlnet", "DifferentialDiffusion", "InstructPixToPixConditioning",
        // nodes_audio.py, nodes_audio_encoder.py, nodes_ace.py
        "EmptyLatentAudio", "VAEEncodeAudio", "VAEDecodeAudio", "SaveAudio", "SaveAudioMP3", "SaveAudioOpus",
        "LoadAudio", "PreviewAudio", "ConditioningStableAudio", "RecordAudio", "TrimAudioDuration",
        "SplitAudioChannels", "AudioConcat", "AudioMerge", "AudioAdjustVolume", "EmptyAudio", "AudioEncoderLoader",
        "AudioEncoderEncode", "TextEncodeAceStepAudio", "EmptyAceStepLatentAudio",
        // nodes_sd3.py, nodes_slg.py, nodes_controlnet.py
        "TripleCLIPLoader", "EmptySD3LatentImage", "CLIPTextEncodeSD3", "ControlNetApplySD3", "SkipLayerGuidanceSD3",
        "SkipLayerGuidanceDiT", "SkipLayerGuidanceDiTSimple", "SetUnionControlNetType",
        "ControlNetInpaintingAliMamaApply",
        // nodes_hunyuan.py, nodes_hunyuan3d.py
        "CLIPTextEncodeHunyuanDiT", "TextEncodeHunyuanVideo_ImageToVideo", "EmptyHunyuanLatentVideo",
        "HunyuanImageToVideo", "EmptyHunyuanImageLatent", "HunyuanRefinerLatent", "EmptyHunyuanVideo15Latent",
        "HunyuanVideo15ImageToVideo", "HunyuanVideo15SuperResolution", "LatentUpscaleModelLoader",
        "HunyuanVideo15LatentUpscaleWithModel", "EmptyLatentHunyuan3Dv2", "Hunyuan3Dv2Conditioning",
        "Hunyuan3Dv2ConditioningMultiView", "VAEDecodeHunyuan3D", "VoxelToMeshBasic", "VoxelToMesh", "SaveGLB",
        // nodes_flux.py, nodes_lumina2.py, nodes_hidream.py, nodes_qwen.py, nodes_chroma_radiance.py
        "CLIPTextEncodeFlux", "FluxGuidance", "FluxDisableGuidance", "FluxKontextImageScale",
        "FluxKontextMultiReferenceLatentMethod", "EmptyFlux2LatentImage", "Flux2Scheduler", "RenormCFG",
        "CLIPTextEncodeLumina2", "QuadrupleCLIPLoader", "CLIPTextEncodeHiDream", "TextEncodeQwenImageEdit",
        "TextEncodeQwenImageEditPlus", "EmptyChromaRadianceLatentImage", "ChromaRadianceOptions",
        // nodes_lora_extract.py, nodes_torch_compile.py, nodes_mochi.py, nodes_mahiro.py
        "LoraSave", "TorchCompileModel", "EmptyMochiLatentVideo", "Mahiro",
        // nodes_lt.py
        "EmptyLTXVLatentVideo", "LTXVImgToVideo", "LTXVConditioning", "ModelSamplingLTXV", "LTXVScheduler",
        "LTXVAddGuide", "LTXVPreprocess", "LTXVCropGuides",
        // nodes_hooks.py
        "CreateHookLora", "CreateHookLoraModelOnly", "CreateHookModelAsLora", "CreateHookModelAsLoraModelOnly",
        "SetHookKeyframes", "CreateHookKeyframe", "CreateHookKeyframesInterpolated", "CreateHookKeyframesFromFloats",
        "CombineHooks2", "CombineHooks4", "CombineHooks8", "ConditioningSetProperties",
        "ConditioningSetPropertiesAndCombine", "PairConditioningSetProperties",
        "PairConditioningSetPropertiesAndCombine", "PairConditioningSetDefaultCombine", "PairConditioningCombine",
        "SetClipHooks", "ConditioningTimestepsRange", "SetModelHooksOnCond",
        // nodes_load_3d.py, nodes_cosmos.py, nodes_video.py
        "Load3D", "Load3DAnimation", "Preview3D", "Preview3DAnimation", "EmptyCosmosLatentVideo",
        "CosmosImageToVideoLatent", "CosmosPredict2ImageToVideoLatent", "SaveWEBM", "SaveVideo", "CreateVideo",
        "GetVideoComponents", "LoadVideo",
        // nodes_wan.py, nodes_camera_trajectory.py, nodes_edit_model.py
        "WanImageToVideo", "WanFunControlToVideo", "WanFunInpaintToVideo", "WanFirstLastFrameToVideo",
        "WanVaceToVideo", "TrimVideoLatent", "WanCameraImageToVideo", "WanPhantomSubjectToVideo", "WanTrackToVideo",
        "Wan22ImageToVideoLatent", "WanSoundImageToVideo", "WanSoundImageToVideoExtend", "WanAnimateToVideo",
        "Wan22FunControlToVideo", "WanHuMoImageToVideo", "WanCameraEmbedding", "ReferenceLatent",
        // nodes_tcfg.py, nodes_context_windows.py, nodes_apg.py, nodes_pag.py, nodes_cfg.py, nodes_fresca.py
        "TCFG", "ContextWindowsManual", "WanContextWindowsManual", "APG", "PerturbedAttentionGuidance", "CFGZeroStar",
        "CFGNorm", "FreSca",
        // nodes_attention_multiply.py, nodes_compositing.py, nodes_webcam.py
        "UNetSelfAttentionMultiply", "UNetCrossAttentionMultiply", "CLIPAttentionMultiply",
        "UNetTemporalAttentionMultiply", "PorterDuffImageComposite", "SplitImageWithAlpha", "JoinImageWithAlpha",
        "WebcamCapture",
        // nodes_string.py, nodes_primitive.py, nodes_preview_any.py
        "StringConcatenate", "StringSubstring", "StringLength", "CaseConverter", "StringTrim", "StringReplace",
        "StringContains", "StringCompare", "RegexMatch", "RegexExtract", "RegexReplace", "PrimitiveString",
        "PrimitiveStringMultiline", "PrimitiveInt", "PrimitiveFloat", "PrimitiveBoolean", "PreviewAny",
        // nodes_train.py, nodes_easycache.py, nodes_model_patch.py, nodes_lotus.py
        "TrainLoraNode", "LoraModelLoader", "SaveLoRANode", "LossGraphNode", "LoadImageSetFromFolderNode",
        "LoadImageTextSetFromFolderNode", "EasyCache", "LazyCache", "ModelPatchLoader", "QwenImageDiffsynthControlnet",
        "USOStyleReference", "LotusConditioning",
    ]
}
