"""What the clip tasks (classify, generate) export from: the run's own clips."""
from sora_tf.runs import held_out, load_clips, source_listing, split_part


def export_inputs(run_dir, config, classes, info, calibration_clips, parity_clips=None):
    """((uint8 held-out clips, labels) for parity: validation, or test where the validation clips
    trained; (training clips, labels) for int8 calibration)."""
    listing = source_listing(classes, info)  # probed once for both parts
    _, held = held_out(run_dir, listing, info["data"])
    if held is None:
        raise ValueError(f"{run_dir}: the run holds out neither validation nor test clips for the parity check")
    val = load_clips(held, config, parity_clips)
    calib = load_clips(split_part(run_dir, listing, "train", info["data"]), config, calibration_clips)
    return val, calib
