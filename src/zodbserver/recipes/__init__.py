"""zc.buildout recipes: ``zodbserver:server`` and ``zodbserver:instance``.

They only render files -- a ``zeo.conf`` or an instance configuration and a
``bin/<part>`` control script -- and never import the server or the
client at buildout time beyond the address parser.  Every wrong option
value fails the buildout with a ``zc.buildout.UserError`` that names the
part and the option, e.g. ``[zeoserver] zeo-address: invalid port 'x'``.
"""
