#!/usr/bin/env python3
"""Writes a registry of the real one's size and shape, deterministically (same seed, same bytes),
and workflows that use it, for bench/analyze.

  make_registry.py OUT [--workflows N]

OUT/extension-node-map.json   ~3,300 repositories, ~25,000 node names (some claimed by several
                              repositories), titles, nodename_patterns and preemptions, indented as
                              ComfyUI-Manager writes it
OUT/custom-node-list.json     an entry per repository (id, reference, files, title, author, description)
OUT/core-node-types.txt       ComfyUI's own types
OUT/workflows/wf-NNN.json     N UI-format workflows (default 100), 40-120 nodes each, drawn from the map
"""
import json
import os
import random
import sys

SEED = 20261205
REPOSITORIES = 3300
WORDS = ("Image Latent Mask Prompt Sampler Loader Video Audio Text Clip Vae Lora Model Upscale Face Pose "
         "Depth Canny Control Noise Seed Batch Grid Tile Crop Resize Blend Color Switch Merge Split Save "
         "Preview Load Encode Decode Conditioning Style Detail Segment Detector Refiner Scheduler Sigma "
         "Frame Flow Motion Camera Light Shadow Paint Sketch Inpaint Outpaint String Number Float Int "
         "Math Logic Router Pipe Bus Cache Memory Gguf Flux Wan Hunyuan Ltx Sdxl Sd3 Cascade Ip Adapter").split()
OWNERS = [f"dev{n:04d}" for n in range(1400)]


def name(rng, suffix):
    parts = rng.sample(WORDS, rng.randint(2, 4))
    text = "".join(parts) + suffix
    if rng.random() < 0.08:
        text = " ".join(parts) + f" ({suffix.strip('_') or 'pack'})"
    return text


def main():
    out = sys.argv[1]
    workflows = 100
    if "--workflows" in sys.argv:
        workflows = int(sys.argv[sys.argv.index("--workflows") + 1])
    rng = random.Random(SEED)
    os.makedirs(os.path.join(out, "workflows"), exist_ok=True)
    core = sorted({name(rng, "") for _ in range(600)} | {"KSampler", "CheckpointLoaderSimple", "VAEDecode", "SaveImage",
                                                         "CLIPTextEncode", "EmptyLatentImage", "LoadImage", "LoraLoader"})
    emap, nodes, all_names = {}, [], []
    emap["https://github.com/comfyanonymous/ComfyUI"] = [core[:400], {"title_aux": "ComfyUI"}]
    for index in range(REPOSITORIES):
        owner = rng.choice(OWNERS)
        repo = "ComfyUI-" + "".join(rng.sample(WORDS, 2)) + f"-{index}"
        url = f"https://github.com/{owner}/{repo}"
        suffix = rng.choice(["", "_" + repo.split("-")[1][:6], " [" + owner + "]", "KJ", "|pysssss", "_v2"])
        count = min(200, max(1, int(rng.expovariate(1 / 7.5))))
        names = sorted({name(rng, suffix) for _ in range(count)})
        # Forks and packs that copy a popular node: names claimed by several repositories.
        if all_names and rng.random() < 0.15:
            names += rng.sample(all_names, min(len(all_names), rng.randint(1, 6)))
        meta = {"title_aux": repo.replace("-", " ")}
        if rng.random() < 0.02:
            meta["nodename_pattern"] = "^" + rng.choice(WORDS) + f"{index}_"
        if rng.random() < 0.01 and names:
            meta["preemptions"] = names[:2]
        emap[url + (".git" if rng.random() < 0.03 else "")] = [names, meta]
        all_names.extend(names)
        nodes.append({
            "author": owner, "title": meta["title_aux"], "id": repo.lower(), "reference": url, "files": [url],
            "install_type": "git-clone",
            "description": " ".join(rng.choice(WORDS).lower() for _ in range(rng.randint(8, 40))) + ".",
        })
    with open(os.path.join(out, "extension-node-map.json"), "w") as f:
        json.dump(emap, f, indent=4)
    with open(os.path.join(out, "custom-node-list.json"), "w") as f:
        json.dump({"custom_nodes": nodes}, f, indent=4)
    with open(os.path.join(out, "core-node-types.txt"), "w") as f:
        f.write("".join(t + "\n" for t in core))
    for w in range(workflows):
        count = rng.randint(40, 120)
        wf_nodes = []
        for n in range(count):
            kind = rng.random()
            t = rng.choice(core) if kind < 0.4 else rng.choice(all_names) if kind < 0.97 else f"Unknown{rng.randint(0, 99)}"
            node = {"id": n + 1, "type": t, "pos": [n * 10, 0], "size": [200, 100], "flags": {}, "order": n,
                    "mode": 0, "inputs": [], "outputs": [], "properties": {"Node name for S&R": t}, "widgets_values": []}
            if t == "CheckpointLoaderSimple":
                node["widgets_values"] = [f"model-{rng.randint(0, 30)}.safetensors"]
            wf_nodes.append(node)
        doc = {"last_node_id": count, "last_link_id": 0, "nodes": wf_nodes, "links": [], "groups": [],
               "config": {}, "extra": {}, "version": 0.4}
        with open(os.path.join(out, "workflows", f"wf-{w:03d}.json"), "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
