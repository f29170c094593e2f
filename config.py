"""Hyperparameters shared by train.py, selfsupervised.py and supervised.py, and the
command-line parser that overrides them.

Each script does `from config import *` and then sets what is its own, so the shared
defaults live here once. Any of them is overridden as `--name=value`; `--help` lists them.
"""
import difflib
import json
import re
import sys

# data
dataset = 'synth'             # synth | speechcommands | sc09 | speechcommands12 | nsynth | esc50 | esc10 | fsdd | folder (your own class folders)
data_root = 'data'            # where the dataset lives (or is downloaded to); never written to otherwise
download = False              # fetch the dataset into data_root when it is missing
cache_dir = '~/.cache/clar'   # generated demo data and waveform caches go here
sample_rate = 16000           # every clip is resampled to this rate, mono
clip_seconds = 0.0            # clip length; 0 = the dataset's own (1 s speech commands and fsdd, 4 s nsynth, 5 s esc)
label_fraction = 1.0          # fraction of training clips whose label is used, in (0, 1]
label_seed = 0                # draws the labelled subset: the same for all three scripts
skip_bad_files = False        # skip (and count) unreadable audio files instead of stopping
nsynth_label = 'instrument_family'  # nsynth's label: instrument_family (11 classes) | pitch (the MIDI pitches present, up to 128)
test_fold = 5                 # esc50/esc10: fold (1-5) held out for test; the fold before it (5 when 1) validates, the other three train
# front end and model
encoder = 'resnet2d'           # resnet2d: ResNet-18 on spectrograms | resnet1d: ResNet-18 (Conv1d, kernel 9) on raw audio
frontend = 'paper'            # paper: 16 ms window, 8 ms hop | released: 2048-point window, hop 128
encoder_width = 1.0           # scales the ResNet-18's channels; 1 = the standard ResNet-18
projection_dim = 128          # size of the contrastive embedding z
# optimisation
batch_size = 256              # clips per step (each gives two views in the contrastive regimes)
epochs = 100                  # passes over the training clips
optimizer = 'adam'            # adam | lars: Adam wrapped in LARS, the released code's recipe (no decay or adaptation of biases and BatchNorm)
learning_rate = 3e-4          # peak learning rate
weight_decay = 1e-6           # weight decay (with lars: on weights only)
warmup_epochs = 10            # linear warm-up, then cosine decay to zero
temperature = 0.5             # NT-Xent temperature
probe = 'linear'              # evaluation head on frozen features: linear | mlp (512-512-classes, dropout 0.2, as the released code)
batchnorm_batches = 16        # before each evaluation, re-estimate BatchNorm statistics on this many training batches (0 = off)
channels_last = True          # channels-last memory layout for the 2D encoder (faster on GPUs and recent CPUs)
dtype = 'auto'                # autocast: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
# augmentation: applied on the device, parameters drawn per clip and per view
augmentations = 'fade,time_mask'  # comma-separated names (augmentation.NAMES); '' = none
fade_max = 0.5                # fade in and fade out each last up to this fraction of the clip
time_mask_max = 0.125         # the masked segment lasts up to this fraction of the clip
time_mask_fill = 'noise'      # noise (low-level Gaussian) | zero | a number
time_mask_noise_db = -30.0    # level of the noise fill relative to the clip's RMS, in dB
time_shift_max = 0.5          # circular shift by up to this fraction of the clip, either way
pitch_shift_min = -15.0       # pitch_shift: semitones drawn uniformly from [min, max]
pitch_shift_max = 15.0        # (pitch_shift_low: |n| <= 5; pitch_shift_high: 5 < |n| <= 15)
time_stretch_min = 0.5        # time_stretch: rate drawn from [min, max], > 1 is faster
time_stretch_max = 1.5        # (time_stretch_low: 0.5-1.0; time_stretch_high: 1.0-1.5)
noise_snr_min = 0.0           # added noise: signal-to-noise ratio drawn from [min, max] dB
noise_snr_max = 20.0          #
fade_p = 1.0                  # probability that a clip gets each augmentation named in augmentations
time_mask_p = 1.0             #
time_shift_p = 1.0            #
pitch_shift_p = 1.0           #
pitch_shift_low_p = 1.0       #
pitch_shift_high_p = 1.0      #
time_stretch_p = 1.0          #
time_stretch_low_p = 1.0      #
time_stretch_high_p = 1.0     #
white_noise_p = 1.0           #
pink_noise_p = 1.0            #
brown_noise_p = 1.0           #
mixed_noise_p = 1.0           #
# run
seed = 0                      # model initialisation, batch order and augmentation draws
device = 'auto'               # auto (CUDA when present) | cpu | cuda | cuda:N
out_dir = 'runs'              # each run writes to out_dir/run_name
run_name = ''                 # '' = regime-dataset-fraction-timestamp; an existing run is never overwritten
log_every = 10                # steps between progress-bar updates
checkpoint_every = 1          # epochs between writes of checkpoint_last.pt (and always at the end)
resume = ''                   # a run directory to continue, with its saved configuration
stop_after_epochs = 0         # stop (resumably) after this many epochs; 0 = run them all
stop_after_steps = 0          # stop (resumably) after this many steps; 0 = never
max_nonfinite_steps = 10      # stop when the loss is NaN or infinite this many steps in a row
init_from = ''                # initialise the encoder from this checkpoint or run directory
compile = False               # torch.compile the model
sync_batchnorm = False        # under torchrun: BatchNorm statistics over all processes
wandb = 'off'                 # off | online | offline


class UserError(Exception):
    """A mistake the user can fix (an option, a path, a file): printed without a traceback."""


def exit_on_user_error(main):
    """Run main(); a UserError becomes a one-line message and exit status 2."""
    try:
        return main()
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)


def defaults_of(namespace):
    """The hyperparameters in a module's globals: public names bound to plain values."""
    return {name: value for name, value in namespace.items()
            if not name.startswith('_') and type(value) in (bool, int, float, str)}


def _comments(paths):
    """The one-line comment after each `name = value` in the given source files."""
    comments = {}
    for path in paths:
        with open(path) as source:
            for line in source:
                match = re.match(r'^(\w+)\s*=.*?#\s*(.*)$', line)
                if match:
                    comments[match.group(1)] = match.group(2)
    return comments


def parse_value(name, text, default):
    """Convert `text` to the type of `default`, or raise UserError naming the option."""
    kind = type(default)
    if kind is bool:
        lowered = text.lower()
        if lowered in ('1', 'true', 'yes', 'on'):
            return True
        if lowered in ('0', 'false', 'no', 'off'):
            return False
        raise UserError(f'option --{name} expects true or false, got {text!r}')
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f'option --{name} expects an integer, got {text!r}') from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f'option --{name} expects a number, got {text!r}') from None
    return text


def parse_args(defaults, argv, sources=(), program='train.py'):
    """Apply `--name=value` overrides to `defaults` and return the resolved config.

    `--help` prints every option with its default and comment, then exits.
    """
    config = dict(defaults)
    for argument in argv:
        if argument in ('-h', '--help'):
            comments = _comments([__file__, *sources])
            print(f'usage: python {program} [--name=value ...]\n')
            for name, value in defaults.items():
                print(f'  --{name}={json.dumps(value) if isinstance(value, str) else value}'
                      f'{"  # " + comments[name] if name in comments else ""}')
            sys.exit(0)
        match = re.match(r'^--(\w+)=(.*)$', argument, re.S)
        if not match:
            raise UserError(f'cannot read argument {argument!r}: options are written --name=value '
                            f'(see --help)')
        name, text = match.groups()
        if name not in defaults:
            close = difflib.get_close_matches(name, defaults, n=3)
            hint = f'did you mean {", ".join("--" + c for c in close)}? ' if close else ''
            raise UserError(f'unknown option --{name}; {hint}valid options: '
                            f'{", ".join(sorted(defaults))}')
        config[name] = parse_value(name, text, defaults[name])
    return config


def parse_command(argv, defaults, positional, usage, doc, extras=False):
    """For the tools with positional arguments (evaluate.py, embed.py, report.py, sweep.py):
    split argv into `positional` plain arguments and --name=value options typed after
    `defaults`. `--help` prints `doc`. With extras=True, options not in `defaults` are
    returned as text in a third value instead of being refused."""
    if not argv or any(a in ('-h', '--help') for a in argv):
        print(doc)
        sys.exit(0)
    plain = [a for a in argv if not a.startswith('--')]
    if len(plain) != positional:
        raise UserError(f'usage: {usage}')
    options, others = dict(defaults), {}
    for argument in argv:
        if not argument.startswith('--'):
            continue
        match = re.match(r'^--(\w+)=(.*)$', argument, re.S)
        if not match or (match.group(1) not in defaults and not extras):
            raise UserError(f'unknown argument {argument!r}; options: '
                            f'{", ".join("--" + n + "=..." for n in defaults)}')
        name, text = match.groups()
        if name in defaults:
            options[name] = parse_value(name, text, defaults[name])
        else:
            others[name] = text
    return (plain, options, others) if extras else (plain, options)


def print_config(config):
    print('configuration:')
    for name, value in config.items():
        print(f'  {name} = {value!r}')
