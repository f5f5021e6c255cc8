%% The supervisor of the call legs (simple_one_for_one): release_handler finds the legs through
%% it, as the modules its child spec names.
-module(call_sup).
-behaviour(supervisor).
-export([start/0, start_link/0, start_leg/2, init/1]).

%% Started from a short-lived process (erl_call): unlinked, or it would stop with its caller.
start() ->
    {ok, Pid} = start_link(),
    unlink(Pid),
    Pid.

%% Started by calls_app, in a release.
start_link() -> supervisor:start_link({local, ?MODULE}, ?MODULE, []).

start_leg(Id, Tick) -> {ok, Pid} = supervisor:start_child(?MODULE, [Id, Tick]), Pid.

init([]) ->
    Leg = #{id => leg, start => {call_leg, start_link, []}, restart => temporary,
            modules => [call_leg]},
    {ok, {#{strategy => simple_one_for_one, intensity => 0, period => 1}, [Leg]}}.
