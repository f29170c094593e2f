"""The options no user tunes per regime (paths, device, logging, augmentation ranges), and the
command-line parser the three scripts share.

The hyperparameters a user edits (data, model, optimisation, augmentations, the regime's own)
sit at the top of each script, `train.py`, `selfsupervised.py` and `supervised.py`: that
block is the one place their defaults live. `script_defaults(globals())` joins them with the
shared options below; any option is overridden as `--name=value`; `--help` lists them all.
"""
import difflib
import json
import re
import sys

import augmentation

# data
cache_dir = '~/.cache/clar'   # generated demo data and waveform caches go here
download = False              # fetch the dataset into data_root when it is missing
sample_rate = 16000           # every clip is resampled to this rate, mono; the only rate accepted (front ends and augmentations are set for it)
clip_seconds = 0.0            # clip length; 0 = the dataset's own (1 s speech commands and fsdd, 4 s nsynth, 5 s esc)
label_seed = 0                # draws the labelled subset: the same for all three scripts
skip_bad_files = False        # skip (and count) unreadable audio files instead of stopping
nsynth_label = 'instrument_family'  # nsynth's label: instrument_family (11 classes) | pitch (the MIDI pitches present, up to 128)
test_fold = 5                 # esc50/esc10: fold (1-5) held out for test; the fold before it (5 when 1) validates, the other three train
unlabelled_root = ''          # folders of unlabelled recordings (comma-separated) whose clip-length windows join the training clips of train.py and selfsupervised.py
unlabelled_hop = 0.0          # seconds between the windows cut from unlabelled recordings; 0 = the clip length
skip_silent_windows = 0.0     # drop unlabelled windows quieter (RMS) than this many dB below full scale, e.g. -50; 0 = keep all
labelled_windows = 'auto'     # cut labelled files longer than a clip into clip-length windows, each with its file's class and split (the split stays by file): auto (on for --dataset=folder only) | true | false (each file's first clip, as for the paper's datasets)
labelled_hop = 0.0            # seconds between the windows cut from labelled files (with --labelled_windows); 0 = the clip length
skip_silent = False           # --dataset=folder: leave out labelled files that are digital silence (every sample 0 at 16 bits); off, they are kept as silent clips and named in data_report.txt
small_classes = 'refuse'      # --dataset=folder, a class with too few files to be in every split: refuse (stop, naming it) | train_only (train on it; its accuracy is not measured)
inspect = False               # print what a run would see of its labelled data (classes, files, windows, durations, rates, channels, silence, duplicates, the split per class) and the checks, then stop; writes nothing
labelled_per_batch = 0        # every batch holds this many labelled clips (cycled; no clip twice in a batch), the rest from the other clips; 0 = batches drawn at random, as they also are where they would hold this many on average
# front end and model
frontend = 'paper'            # paper: 16 ms window, 8 ms hop | released: 2048-point window, hop 128
projection_dim = 128          # size of the contrastive embedding z
init_from = ''                # initialise the encoder from this checkpoint or run directory
# schedule and evaluation
lr_schedule = 'cosine'        # after the warm-up: cosine (decay to zero) | constant (the released code at 1 % labels)
steps = 0                     # optimiser steps in all; 0 = epochs x steps per epoch (given, it replaces --epochs: e.g. a baseline at equal steps)
eval_every_steps = 0          # validate and checkpoint every this many steps; 0 = at the end of every epoch
diagnostics = True            # at each validation, linear probes on h and on p beside the head; at the end, the head on the labelled clips clean and augmented
batchnorm_batches = 16        # before each evaluation, re-estimate BatchNorm statistics on this many training batches (0 = off)
# speed
channels_last = True          # channels-last memory layout for the 2D encoder (faster on GPUs and recent CPUs)
dtype = 'auto'                # autocast: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
compile = False               # torch.compile the model
sync_batchnorm = False        # under torchrun: BatchNorm statistics over all processes
# run
seed = 0                      # model initialisation, batch order and augmentation draws
device = 'auto'               # auto (CUDA when present) | cpu | cuda | cuda:N
out_dir = 'runs'              # each run writes to out_dir/run_name
run_name = ''                 # '' = regime-dataset-fraction-timestamp; an existing run is never overwritten
log_every = 10                # steps between logged losses and learning rates (progress bar, wandb)
checkpoint_every = 1          # epochs between writes of checkpoint_last.pt (and always at the end)
resume = ''                   # a run directory to continue, with its saved configuration
stop_after_epochs = 0         # stop (resumably) after this many epochs; 0 = run them all
stop_after_steps = 0          # stop (resumably) after this many steps; 0 = never
max_nonfinite_steps = 10      # stop when the loss is NaN or infinite this many steps in a row
wandb = 'off'                 # off | online | offline (Weights & Biases; offline needs no account)
wandb_project = 'clar'        # the Weights & Biases project runs are logged to
# augmentation ranges and per-clip probabilities: augmentation.DEFAULTS (one source for both)

# The type of each option the scripts set at their top, by what it means, so that a user who
# writes `learning_rate = 1` there still has a float option. The shared options above take
# the type of their default.
SCRIPT_OPTION_TYPES = {
    'dataset': str, 'data_root': str, 'label_fraction': float,
    'encoder': str, 'encoder_width': float,
    'optimizer': str, 'batch_size': int, 'epochs': int, 'learning_rate': float,
    'weight_decay': float, 'warmup_epochs': int,
    'augmentations': str,
    'ce_weight': float, 'temperature': float, 'probe': str, 'class_input': str, 'heads': str,
    'pseudo_labels': str, 'pseudo_threshold': float, 'pseudo_weight': float,
    'pseudo_start_epoch': int, 'pseudo_weak_view': str, 'ema_decay': float,
}


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
    """The options in a module's globals: public names bound to plain values."""
    return {name: value for name, value in namespace.items()
            if not name.startswith('_') and type(value) in (bool, int, float, str)}


SHARED = {**defaults_of(globals()), **augmentation.DEFAULTS}


def script_defaults(namespace):
    """A training script's options: the shared ones, then the script's own (its globals),
    which win wherever the script sets them, each converted to the option's type."""
    own = defaults_of(namespace)
    merged = {**SHARED, **own}
    where = namespace.get('__file__', 'the script')
    return {name: coerce(name, value, option_type(name, merged), f'{name} = {value!r} in {where}')
            for name, value in merged.items()}


def option_type(name, defaults):
    if name in SCRIPT_OPTION_TYPES:
        return SCRIPT_OPTION_TYPES[name]
    if name in SHARED:
        return type(SHARED[name])
    return type(defaults[name])


def coerce(name, value, kind, where):
    """`value` as an option of type `kind`: 1 is a float where a float is meant, 2.0 an int
    where an int is; anything else of the wrong type is refused, naming `where`."""
    if type(value) is kind:
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind is int and type(value) is float and value.is_integer():
        return int(value)
    raise UserError(f'{where}: --{name} is {"a number" if kind is float else kind.__name__}, '
                    f'got {type(value).__name__}')


def _comments(paths):
    """The one-line comment after each `name = value` (or `"name": value,` in a dict) in the
    given source files."""
    comments = {}
    for path in paths:
        with open(path) as source:
            for line in source:
                match = re.match(r'^\s*["\']?(\w+)["\']?\s*[=:].*?#\s*(.*)$', line)
                if match and match.group(2):
                    comments.setdefault(match.group(1), match.group(2))
    return comments


def parse_value(name, text, kind):
    """Convert `text` to `kind` (bool, int, float or str), or raise UserError naming the option."""
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


def format_default(value):
    return json.dumps(value) if isinstance(value, str) else str(value)


def print_help(defaults, program, sources, own=()):
    """Every option with its default and comment; the script's own block first."""
    comments = _comments([*sources, __file__, augmentation.__file__])
    comments.update({f'{name}_p': f'probability that a clip gets {name} (when --augmentations names it)'
                     for name in augmentation.NAMES})
    print(f'usage: python {program} [--name=value ...]\n')
    groups = [(f'set at the top of {program}:', [n for n in defaults if n in own]),
              ('shared (config.py; augmentation ranges from augmentation.py):',
               [n for n in defaults if n not in own])]
    for title, names in groups:
        if own and names:
            print(title)
        for name in names:
            comment = f'  # {comments[name]}' if name in comments else ''
            print(f'  --{name}={format_default(defaults[name])}{comment}')


def parse_args(defaults, argv, sources=(), program='train.py', own=()):
    """Apply `--name=value` overrides to `defaults` and return the resolved config.
    Each option keeps its type (option_type); `--help` prints every option with its default
    and comment, then exits. `own`: the names the script itself sets (listed first)."""
    config = dict(defaults)
    for argument in argv:
        if argument in ('-h', '--help'):
            print_help(defaults, program, sources, own)
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
        config[name] = parse_value(name, text, option_type(name, defaults))
    return config


def parse_command(argv, defaults, positional, usage, doc, extras=False):
    """For the tools with positional arguments (evaluate.py, embed.py, report.py, sweep.py):
    split argv into `positional` plain arguments and --name=value options typed after
    `defaults` (positional=None: one or more). `--help` prints `doc`. With extras=True,
    options not in `defaults` are returned as text in a third value instead of being refused."""
    if not argv or any(a in ('-h', '--help') for a in argv):
        print(doc)
        sys.exit(0)
    plain = [a for a in argv if not a.startswith('--')]
    if (not plain) if positional is None else len(plain) != positional:
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
            options[name] = parse_value(name, text, type(defaults[name]))
        else:
            others[name] = text
    return (plain, options, others) if extras else (plain, options)


def print_config(config):
    print('configuration:')
    for name, value in config.items():
        print(f'  {name} = {value!r}')
