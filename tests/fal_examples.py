"""fal's own example prompt for both Wan 2.6 image-to-video endpoints, as its model pages
serve it: 805 characters, over the 800 its field description states."""

FAL_EXAMPLE_PROMPT = (
    "A comedic cinematic demo where typed prompts physically transform real"
    "ity. Photoreal, strong match cuts, coherent main character, no subtitl"
    'es.\n\nShot 1 [0-4s] Continue from first frame. The creator presses "PRI'
    'NT". The machine clunks like a spaceship. Creator whispers: "Okay… I\'m'
    ' pressing enter."\nShot 2 [4-8s] Smash cut: the printed paper flies int'
    "o the air and unfolds into a full desert canyon scene around the desk,"
    ' like reality is being unrolled. Creator says: "Wait—my prompt has phy'
    'sics?"\nShot 3 [8-12s] Hard cut: the paper tears and reveals a tropical'
    ' jungle behind it, perfectly lit, cinematic sun. Creator laughs: "This'
    ' is exactly why we do AI."\nShot 4 [12-15s] Hard cut back to studio. Th'
    "e printer prints a final line (not shown clearly). Creator looks to ca"
    'mera: "Multi-scene. Single prompt."'
)
assert len(FAL_EXAMPLE_PROMPT) == 805
