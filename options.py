"""Checking a run's options before anything is loaded or written, and what they resolve to
(device, autocast type, augmentation settings, a resumed run's saved configuration)."""
from pathlib import Path

import torch

import augmentation
import checkpoint
import datacheck
import dataset
import evaluation
import model as model_module
import optim
import pseudolabels
import rundir
from config import UserError
from spectograms import FRONTENDS

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
WANDB_MODES = ('off', 'online', 'offline')
LR_SCHEDULES = ('cosine', 'constant')
# options that may change when a run is resumed; everything else comes from its config.json
RESUMABLE_OVERRIDES = ('device', 'stop_after_epochs', 'stop_after_steps', 'log_every', 'wandb',
                       'cache_dir', 'data_root', 'compile')


# what a configuration saved before an option existed meant by it: runs made then load their
# data as they were trained (evaluate.py, --resume)
BEFORE_OPTION = {'labelled_windows': 'false'}


SAMPLE_RATE = 16000     # the front ends' windows and the augmentations' STFT sizes are set for it
CONTRASTIVE = ('clar', 'selfsupervised')    # the regimes that contrast two views of a clip


def check(cfg, regime=None, given=(), resumed=False):
    """Reject impossible option values before anything is loaded or written, and (for a new
    run) options that would not do what they say. `regime`: the script's regime (None: its
    checks are skipped); `given`: the option names set on the command line."""
    def one_of(name, valid):
        if cfg[name] not in valid:
            raise UserError(f'unknown --{name}={cfg[name]}; valid: {", ".join(valid)}')
    one_of('dataset', dataset.DATASETS)
    one_of('frontend', FRONTENDS)
    one_of('encoder', model_module.ENCODERS)
    one_of('optimizer', optim.OPTIMIZERS)
    one_of('probe', evaluation.PROBES)
    one_of('dtype', ('auto', *DTYPES))
    one_of('wandb', WANDB_MODES)
    one_of('lr_schedule', LR_SCHEDULES)
    if 'class_input' in cfg:
        one_of('class_input', model_module.CLASS_INPUTS)
        one_of('heads', model_module.HEAD_KINDS)
    if not 0 < cfg['label_fraction'] <= 1:
        raise UserError(f'--label_fraction must be in (0, 1], got {cfg["label_fraction"]}')
    for name in ('batch_size', 'epochs', 'checkpoint_every', 'log_every'):
        if cfg[name] < 1:
            raise UserError(f'--{name} must be at least 1, got {cfg[name]}')
    for name in ('steps', 'eval_every_steps', 'labelled_per_batch'):
        if cfg[name] < 0:
            raise UserError(f'--{name} must be 0 (off) or more, got {cfg[name]}')
    if cfg['labelled_per_batch'] >= cfg['batch_size']:
        raise UserError(f'--labelled_per_batch={cfg["labelled_per_batch"]} must be below '
                        f'--batch_size={cfg["batch_size"]} (the rest of each batch comes from '
                        f'the other clips)')
    if str(cfg['labelled_windows']).lower() != 'auto':
        try:
            dataset.labelled_windows_on(cfg['dataset'], cfg['labelled_windows'])
        except UserError:
            raise UserError(f'unknown --labelled_windows={cfg["labelled_windows"]}; valid: auto, '
                            f'true, false') from None
    one_of('small_classes', datacheck.SMALL_CLASSES)
    if cfg['labelled_hop'] < 0:
        raise UserError(f'--labelled_hop must be 0 (the clip length) or more seconds, got '
                        f'{cfg["labelled_hop"]}')
    if cfg['unlabelled_hop'] < 0 or cfg['skip_silent_windows'] > 0:
        raise UserError('--unlabelled_hop must be 0 (the clip length) or more seconds, and '
                        '--skip_silent_windows a level in dB below full scale (negative, e.g. '
                        '-50; 0 = off)')
    for name in ('encoder_width', 'learning_rate', 'temperature'):
        if name in cfg and cfg[name] <= 0:
            raise UserError(f'--{name} must be positive, got {cfg[name]}')
    if 'pseudo_labels' in cfg:
        check_pseudo_labels(cfg, given)
    try:
        augmentation.draw(augmentation_names(cfg), 2, 1000, cfg['sample_rate'],
                          torch.Generator(), **augmentation_options(cfg))
    except ValueError as error:
        raise UserError(f'augmentation options: {error}') from None
    if not resumed:     # a resumed run keeps the settings it started with
        check_options_take_effect(cfg, regime, given)
    resolve_device(cfg['device'])
    if cfg.get('init_from'):
        checkpoint.check_init_from(cfg)     # the clip length once the data is loaded (engine)
    if cfg['wandb'] != 'off':
        rundir.check_wandb(cfg['wandb'])


PSEUDO_OPTIONS = ('pseudo_threshold', 'pseudo_weight', 'pseudo_start_epoch',
                  'pseudo_weak_view', 'ema_decay')


def check_pseudo_labels(cfg, given=()):
    """train.py's pseudo-label options: values in range, and none set while the term is off."""
    if cfg['pseudo_labels'] not in pseudolabels.MODES:
        raise UserError(f'unknown --pseudo_labels={cfg["pseudo_labels"]}; valid: '
                        f'{", ".join(pseudolabels.MODES)}')
    if cfg['pseudo_weak_view'] not in pseudolabels.WEAK_VIEWS:
        raise UserError(f'unknown --pseudo_weak_view={cfg["pseudo_weak_view"]}; valid: '
                        f'{", ".join(pseudolabels.WEAK_VIEWS)}')
    if not 0 < cfg['pseudo_threshold'] <= 1:
        raise UserError(f'--pseudo_threshold must be in (0, 1] (a class probability), got '
                        f'{cfg["pseudo_threshold"]}')
    if cfg['pseudo_weight'] < 0:
        raise UserError(f'--pseudo_weight must be 0 or more, got {cfg["pseudo_weight"]}')
    if not 0 <= cfg['ema_decay'] < 1:
        raise UserError(f'--ema_decay must be in [0, 1) (0: no moving average; 1 would never '
                        f'move), got {cfg["ema_decay"]}')
    if cfg['pseudo_start_epoch'] < 0:
        raise UserError(f'--pseudo_start_epoch must be 0 or more, got {cfg["pseudo_start_epoch"]}')
    if cfg['pseudo_labels'] == 'off':
        set_here = [n for n in PSEUDO_OPTIONS if n in given]
        if set_here:
            raise UserError(f'--{set_here[0]} is read only with pseudo-labels on; add '
                            f'--pseudo_labels=fixed (or per_class), or leave --{set_here[0]} out')
    elif not cfg['steps'] and cfg['pseudo_start_epoch'] >= cfg['epochs']:
        raise UserError(f'--pseudo_start_epoch={cfg["pseudo_start_epoch"]} is not below '
                        f'--epochs={cfg["epochs"]}: pseudo-labels would never join the loss')


def check_against_data(cfg, data, train_on):
    """Checks that need the loaded data, still before the run directory is made; and a
    suggestion where labels would drown in an unlabelled pool."""
    per_batch = cfg['labelled_per_batch']
    if train_on != 'all':
        if per_batch:
            print('note: supervised.py trains on the labelled clips only; '
                  '--labelled_per_batch is ignored')
        return
    labelled = dataset.labelled_clips(data, cfg['label_fraction'], cfg['label_seed'])
    if (cfg.get('pseudo_labels', 'off') != 'off' and len(labelled) == len(data.splits['train'])
            and not len(data.unlabelled)):
        raise UserError(f'--pseudo_labels={cfg["pseudo_labels"]}: every training clip is '
                        f'labelled (--label_fraction={cfg["label_fraction"]:g}, no '
                        f'--unlabelled_root), so there is nothing to pseudo-label')
    if per_batch > len(labelled):
        raise UserError(f'--labelled_per_batch={per_batch} is more than the {len(labelled)} '
                        f'labelled clips (a batch may not hold a clip twice); lower it')
    pool = len(data.splits['train']) + len(data.unlabelled)
    if len(data.unlabelled) and not per_batch and len(labelled) < 0.1 * pool:
        expected = cfg['batch_size'] * len(labelled) / pool
        suggested = max(1, min(len(labelled), cfg['batch_size'] // 8))
        print(f'note: {len(labelled)} labelled clips among {pool}: a random batch of '
              f'{cfg["batch_size"]} holds {expected:.2f} of them on average. '
              f'--labelled_per_batch={suggested} puts {suggested} in every batch.')


def check_options_take_effect(cfg, regime=None, given=()):
    """Refuse settings that would quietly do something other than what they say."""
    if cfg['sample_rate'] != SAMPLE_RATE:
        raise UserError(f'--sample_rate={cfg["sample_rate"]}: the front end\'s windows and hops '
                        f'and the augmentations\' STFT sizes are sample counts set for '
                        f'{SAMPLE_RATE} Hz; every clip is resampled to {SAMPLE_RATE} Hz whatever '
                        f'its own rate, so leave --sample_rate at {SAMPLE_RATE}')
    check_warmup(cfg['warmup_epochs'], cfg['epochs'])
    check_data_options(cfg, given)
    names = augmentation_names(cfg)
    if regime in CONTRASTIVE:
        check_views_differ(cfg, names)
    check_augmentation_options_are_read(cfg, names, given)


def check_data_options(cfg, given=()):
    """The labelled-data options act on the datasets they are for."""
    if cfg['dataset'] != 'folder':
        for name, off in (('skip_silent', False), ('small_classes', 'refuse')):
            if cfg[name] != off:
                raise UserError(f'--{name}={cfg[name]} is for --dataset=folder, whose folders '
                                f'are checked as they load; the {cfg["dataset"]} dataset is '
                                f'taken as it is: drop --{name}')
    if cfg['labelled_hop'] and not dataset.labelled_windows_on(
            cfg['dataset'], cfg['labelled_windows']):
        raise UserError(f'--labelled_hop={cfg["labelled_hop"]:g} sets the step between windows of '
                        f'labelled files, but --labelled_windows is off for --dataset='
                        f'{cfg["dataset"]}: add --labelled_windows=True, or drop --labelled_hop')


def check_warmup(warmup_epochs, epochs):
    if warmup_epochs < 0:
        raise UserError(f'--warmup_epochs must be at least 0, got {warmup_epochs}')
    if warmup_epochs and warmup_epochs >= epochs:
        raise UserError(f'--warmup_epochs={warmup_epochs} is not below --epochs={epochs}: the '
                        f'learning rate would still be rising at the last step and never decay; '
                        f'give fewer warm-up epochs (e.g. --warmup_epochs={epochs // 10}) or more '
                        f'--epochs')


def check_views_differ(cfg, names):
    """The contrastive loss needs two different views of each clip."""
    if not names:
        raise UserError('--augmentations is empty: the two views of every clip would be the '
                        'same, and the contrastive loss learns nothing from them; name at least '
                        'one augmentation (e.g. --augmentations=fade,time_mask)')
    if all(cfg[f'{name}_p'] == 0 for name in names):
        zero = ' '.join(f'--{name}_p=0' for name in names)
        raise UserError(f'--augmentations={cfg["augmentations"]} with {zero}: no clip is '
                        f'augmented, so the two views of every clip would be the same; give '
                        f'at least one of them a probability above 0')


def check_augmentation_options_are_read(cfg, names, given=()):
    """Refuse an augmentation option that was set (given on the command line, or changed
    from its default) when no augmentation in --augmentations reads it: e.g.
    --pitch_shift_max with pitch_shift_low, whose range is fixed."""
    reads = {name: (*augmentation.AUGMENTATIONS[name].keywords, f'{name}_p')
             for name in augmentation.NAMES}
    for option, default in augmentation.DEFAULTS.items():
        if option not in cfg or (cfg[option] == default and option not in given):
            continue
        readers = [name for name in augmentation.NAMES if option in reads[name]]
        if set(readers) & set(names):
            continue
        raise UserError(unread_option_message(cfg, option, default, readers, names))


def unread_option_message(cfg, option, default, readers, names):
    chosen = '--augmentations=' + (cfg['augmentations'] or "''")
    which = (f'which {chosen} does not include' if len(readers) == 1 else
             f'none of which {chosen} includes')
    # a chosen variant of a reader with a fixed range (pitch_shift_low for pitch_shift_max)
    applies = {augmentation.AUGMENTATIONS[name].apply for name in readers}
    fixed = [name for name in names if augmentation.AUGMENTATIONS[name].apply in applies]
    note = ''
    if fixed and not option.endswith('_p'):
        has = 'has a fixed range' if len(fixed) == 1 else 'have fixed ranges'
        note = f' ({", ".join(fixed)} {has})'
    return (f'--{option}={cfg[option]} is read only by {", ".join(readers)}, {which}{note}; add '
            f'{"it" if len(readers) == 1 else "one"} to --augmentations, or leave --{option} '
            f'out (default {default})')


def augmentation_names(cfg):
    names = [n.strip() for n in cfg['augmentations'].split(',') if n.strip()]
    unknown = [n for n in names if n not in augmentation.NAMES]
    if unknown:
        raise UserError(f'unknown augmentation {unknown[0]!r} in --augmentations; valid: '
                        f'{", ".join(augmentation.NAMES)}')
    return names


def augmentation_options(cfg):
    """The options that are augment() keyword arguments (probabilities and ranges)."""
    return {k: cfg[k] for k in augmentation.DEFAULTS if k in cfg}


def dataset_options(cfg):
    """Options that only some datasets read (in a configuration saved before one existed,
    what it meant then: BEFORE_OPTION)."""
    return {name: cfg[name] if name in cfg else BEFORE_OPTION[name]
            for name in dataset.EXTRA_OPTIONS if name in cfg or name in BEFORE_OPTION}


def resolve_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f'unknown --device={name}; valid: auto, cpu, cuda, cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device={name} asked for CUDA, but no CUDA device is available; '
                        f'use --device=cpu or --device=auto')
    return device


def autocast_dtype(cfg, device):
    if cfg['dtype'] == 'auto':
        return torch.bfloat16 if device.type == 'cuda' else torch.float32
    return DTYPES[cfg['dtype']]


def resumed_config(cfg, given):
    """The saved configuration of the run in cfg['resume'], with the few options that may
    change (RESUMABLE_OVERRIDES) taken from the command line when given there."""
    run_dir = Path(cfg['resume']).expanduser()
    if not (run_dir / 'config.json').exists():
        raise UserError(f'--resume={cfg["resume"]}: no config.json there; give the run directory '
                        f'printed when the run started')
    if not (run_dir / 'checkpoint_last.pt').exists():
        raise UserError(f'--resume={cfg["resume"]}: the run has no checkpoint_last.pt yet; '
                        f'start it again instead')
    refused = sorted(set(given) - set(RESUMABLE_OVERRIDES) - {'resume'})
    if refused:
        raise UserError(f'--resume continues a run with its saved configuration; drop '
                        f'{", ".join("--" + n for n in refused)} (only '
                        f'{", ".join("--" + n for n in RESUMABLE_OVERRIDES)} may be given)')
    if (rundir.read_json(run_dir / 'status.json') or {}).get('status') == 'finished':
        raise UserError(f'--resume={cfg["resume"]}: that run has already finished')
    saved = {**BEFORE_OPTION, **rundir.read_json(run_dir / 'config.json')}
    saved.pop('regime', None)
    resolved = {**cfg, **saved, 'resume': str(run_dir), 'stop_after_epochs': 0,
                'stop_after_steps': 0}
    resolved.update({name: cfg[name] for name in given if name in RESUMABLE_OVERRIDES})
    return resolved
