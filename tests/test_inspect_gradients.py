"""tools/inspect_gradients.py: per-term gradient norms of a KD and a MiPKD option file, checked
against gradients taken by hand on the model, and their response to a term's loss_weight."""
import copy
import json
import math
import os
import subprocess
import sys

import pytest

from helpers import REPO, load_tool, save_random_teacher, sr_options, tiny_arch, write_yaml

TOOL = os.path.join(REPO, 'tools', 'inspect_gradients.py')
SCALE = 2


inspect_gradients = load_tool('inspect_gradients')


def kd_options(root, data, teacher, model_type='KDModel', family='EDSR', train=None, mixer=None):
    """A tiny training option dict (the layout of a BasicSR option file, no parsed keys)."""
    hr_dir, lr_dir = data
    train_opt = dict(kd_opt=dict(type='L1Loss', loss_weight=1.0))
    train_opt.update(train or {})
    extra = dict(network_t=tiny_arch(family, 't', SCALE), path=dict(pretrain_network_t=teacher),
                 distill=dict(num_stages=2), train=train_opt)
    if mixer is not None:
        extra['mixer'] = mixer
    return sr_options(f'grads_{model_type}_{family}', str(root), SCALE, tiny_arch(family, 'g', SCALE), hr_dir, lr_dir,
                      val=False, model_type=model_type, batch=3, extra=extra)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty folder, so that anything the tool wrongly creates shows."""
    folder = tmp_path / 'cwd'
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def teacher_path(tmp_path):
    def make(family):
        return save_random_teacher(str(tmp_path / f'teacher_{family}.pth'), tiny_arch(family, 't', SCALE))

    return make


def test_kd_terms_match_gradients_taken_by_hand(tmp_path, workdir, tiny_data, teacher_path, capsys):
    feat_opt = [dict(type='FitNetLoss', loss_weight=0.5), dict(type='ATLoss', loss_weight=1.0)]
    opt = kd_options(tmp_path, tiny_data[SCALE], teacher_path('EDSR'), train=dict(feat_opt=feat_opt))
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    info = inspect_gradients.main(['-opt', opt_file, '--batches', '2', '--json', str(tmp_path / 'g.json')])

    rows = {r['term']: r for r in info['terms']}
    assert list(rows) == ['l_pix', 'l_kd', 'l_fitnet', 'l_at']
    assert [rows[k]['weight'] for k in rows] == [1.0, 1.0, 0.5, 1.0]
    assert info['batches'] == 2 and all(len(r['per_batch']) == 2 for r in rows.values())
    assert all(r['grad_student'] > 0 for r in rows.values())
    # only FitNet has a trainable extra module (its connectors)
    assert rows['l_fitnet']['grad_extras'] > 0
    assert rows['l_pix']['grad_extras'] == rows['l_kd']['grad_extras'] == rows['l_at']['grad_extras'] == 0
    for b in range(2):
        assert sum(r['per_batch'][b]['share'] for r in rows.values()) == pytest.approx(1, abs=1e-6)
    assert json.load(open(tmp_path / 'g.json'))['terms'][2]['term'] == 'l_fitnet'
    out = capsys.readouterr().out
    assert '| l_fitnet | 0.5 |' in out and '| total |' in out
    assert os.listdir(workdir) == []  # nothing created (no experiments/, no tb_logger/)

    # the first batch's numbers, recomputed on a model built and fed the same way, by plain backward()
    tool_opt = inspect_gradients.parse_training_options(opt_file, str(tmp_path))
    from basicsr.models import build_model
    model = build_model(tool_opt)
    batch = next(inspect_gradients.batches(tool_opt, 1))
    model.feed_data(batch)
    losses, _ = model.train_step(model.lq, model.gt, model.run_teacher(model.lq), 1)
    student = list(model.net_g.parameters())
    for name, loss in losses.items():
        for p in student:
            p.grad = None
        loss.backward(retain_graph=True)
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in student if p.grad is not None))
        assert rows[name]['per_batch'][0]['loss'] == pytest.approx(loss.item(), rel=1e-5)
        assert rows[name]['per_batch'][0]['grad_student'] == pytest.approx(norm, rel=1e-4)


def test_mipkd_terms_reach_what_they_should(tmp_path, workdir, teacher_path):
    """SwinIR student, random teacher and data: l_ae trains only the mixers; l_fpm and l_bpm reach both."""
    opt = kd_options(tmp_path, ('/absent/hr', '/absent/lr'), str(tmp_path / 'absent_teacher.pth'),
                     model_type='MiPKDModel', family='SwinIR')
    opt_file = write_yaml(str(tmp_path / 'mipkd.yml'), opt)
    info = inspect_gradients.main(['-opt', opt_file, '--batches', '1', '--teacher-random', '--random-data'])
    rows = {r['term']: r for r in info['terms']}
    assert set(rows) == {'l_pix', 'l_kd', 'l_fpm', 'l_bpm', 'l_ae'}
    assert rows['l_bpm']['weight'] == 0.1 and info['data'] == 'random LR/HR pairs' and info['teacher'] == 'random'
    assert rows['l_ae']['grad_student'] == 0 and rows['l_ae']['grad_extras'] > 0
    for name in ('l_fpm', 'l_bpm'):
        assert rows[name]['grad_student'] > 0 and rows[name]['grad_extras'] > 0
    assert rows['l_pix']['grad_extras'] == rows['l_kd']['grad_extras'] == 0
    assert os.listdir(workdir) == []


@pytest.mark.parametrize('model_type,term,key', [('KDModel', 'l_kd', 'kd_opt'), ('KDModel', 'l_fakd', 'feat_opt'),
                                                 ('MiPKDModel', 'l_bpm', 'bpm_opt')])
def test_student_gradient_scales_with_the_weight(tmp_path, workdir, model_type, term, key):
    """x10 on one term's loss_weight: its loss and gradients x10, every other term unchanged."""
    results = {}
    for weight in (1.0, 10.0):
        loss_opt = dict(type='FAKDLoss' if term == 'l_fakd' else 'L1Loss', loss_weight=weight)
        opt = kd_options(tmp_path, ('/absent/hr', '/absent/lr'), str(tmp_path / 'absent.pth'), model_type=model_type,
                         train={key: [loss_opt] if key == 'feat_opt' else loss_opt})
        opt_file = write_yaml(str(tmp_path / f'w{weight:g}.yml'), opt)
        info = inspect_gradients.main(['-opt', opt_file, '--batches', '1', '--teacher-random', '--random-data'])
        results[weight] = {r['term']: r for r in info['terms']}
    one, ten = results[1.0], results[10.0]
    assert set(one) == set(ten) and term in one
    for name in one:
        factor = 10 if name == term else 1
        for key_ in ('loss', 'grad_student', 'grad_extras'):
            assert ten[name][key_] == pytest.approx(factor * one[name][key_], rel=1e-4, abs=1e-12), (name, key_)
    assert ten[term]['share'] > one[term]['share']


def test_errors_name_the_culprit(tmp_path, workdir, tiny_data, teacher_path):
    def message(argv):
        with pytest.raises(SystemExit) as info:
            inspect_gradients.main(argv)
        return str(info.value.code)

    opt = kd_options(tmp_path, tiny_data[SCALE], str(tmp_path / 'nope.pth'))
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    assert 'path.pretrain_network_t' in message(['-opt', opt_file])
    sr = copy.deepcopy(opt)
    sr['model_type'] = 'SRModel'
    for k in ('network_t', 'distill'):
        sr.pop(k)
    sr['path'].pop('pretrain_network_t')
    sr['train'].pop('kd_opt')
    sr_file = write_yaml(str(tmp_path / 'sr.yml'), sr)
    assert 'not a distillation model' in message(['-opt', sr_file])
    assert 'no network_t' in message(['-opt', sr_file, '--teacher-random'])
    assert 'Option file not found' in message(['-opt', str(tmp_path / 'absent.yml')])
    assert os.listdir(workdir) == []


def test_runs_as_a_script(tmp_path, teacher_path):
    opt = kd_options(tmp_path, ('/absent/hr', '/absent/lr'), teacher_path('EDSR'),
                     train=dict(feat_opt=[dict(type='RKDLoss', loss_weight=1.0)]))
    opt_file = write_yaml(str(tmp_path / 'kd.yml'), opt)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, TOOL, '-opt', opt_file, '--random-data', '--batches', '1', '--cpu'],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '| l_rkd | 1 |' in proc.stdout
    proc = subprocess.run([sys.executable, TOOL, '--help'], capture_output=True, text=True, timeout=120, cwd='/')
    assert proc.returncode == 0 and 'Examples' in proc.stdout and 'python tools/inspect_gradients.py' in proc.stdout
