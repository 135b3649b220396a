"Packaging for ssd_tutorial: all metadata lives in settings.ini (nbdev 2 layout)."
from configparser import ConfigParser
import setuptools, shlex

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
c = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[c['license']]
reqs = shlex.split(c.get('requirements', ''))
dev_reqs = shlex.split(c.get('dev_requirements', ''))
scripts = [s.strip() for s in c.get('console_scripts', '').split('\n') if s.strip()]

setuptools.setup(
    name=c['lib_name'], version=c['version'], description=c['description'],
    license=lic[0], author=c['author'], author_email=c['author_email'],
    classifiers=[f'Development Status :: {statuses[int(c["status"])]}', f'License :: {lic[1]}',
                 'Intended Audience :: Developers', 'Natural Language :: English',
                 'Programming Language :: Python :: 3'],
    url=c['git_url'], packages=setuptools.find_packages(include=[c['lib_name'], c['lib_name'] + '.*']),
    include_package_data=True, install_requires=reqs, extras_require={'dev': dev_reqs},
    python_requires='>=' + c['min_python'], keywords=c['keywords'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    zip_safe=False, entry_points={'console_scripts': scripts, 'nbdev': [f'{c["lib_path"]}={c["lib_path"]}._modidx:d']},
)
